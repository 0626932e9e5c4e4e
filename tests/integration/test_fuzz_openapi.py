"""Schemathesis against /openapi.json: every route, admin with and without the token.

No answer may be a 5xx, and every answer must be one the document describes (status, content
type, body schema). Kept small (a few examples per route) so it stays well inside a minute.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env

TOKEN = "admin-token-for-fuzzing"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.long(15)
def test_no_server_error_and_every_answer_documented(
    make_fake: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = make_fake({"k0": {}, "k1": {}})
    gateway = make_gateway(
        {**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": TOKEN, "DOCS_ENABLED": "true"}
    )
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

        fuzz()
