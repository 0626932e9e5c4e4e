"""/openapi.json is a valid OpenAPI document whose references resolve and that names every answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env


@pytest.fixture
def spec(make_fake: FakeFactory, make_gateway: GatewayFactory) -> dict[str, Any]:
    fake = make_fake({"k0": {}})
    gateway = make_gateway({**provider_env("alpha", fake, ["k0"]), "DOCS_ENABLED": "true"})
    answer = httpx.get(f"{gateway.base_url}/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


def resolves(spec: dict[str, Any], ref: str) -> bool:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_the_document_validates_and_every_reference_resolves(spec: dict[str, Any]) -> None:
    validate(spec)
    assert [r for r in refs_in(spec) if not resolves(spec, r)] == []


def test_chat_bodies_and_the_batch_body_are_described(spec: dict[str, Any]) -> None:
    def body(path: str) -> str:
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        return str(schema["schema"]["$ref"])

    assert body("/api/chat").endswith("/ChatRequest")
    assert body("/api/chat/stream").endswith("/ChatRequest")
    assert body("/v1/chat/completions").endswith("/OpenAIChatRequest")
    assert body("/api/chat/batch").endswith("/BatchRequest")


def test_admin_routes_name_their_bearer_scheme_and_every_route_its_errors(
    spec: dict[str, Any],
) -> None:
    assert spec["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        for op in operations.values():
            statuses = set(op["responses"])
            assert "500" in statuses, path
            if path.startswith("/api/admin/"):
                assert op["security"] == [{"AdminToken": []}]
                assert {"401", "403", "404"} <= statuses
            if path.startswith(("/api/chat", "/v1/chat")):
                assert {"400", "413", "429", "503"} <= statuses
