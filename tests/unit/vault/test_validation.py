"""How a probe's status decides whether a new key is stored."""

from __future__ import annotations

import pytest

from app.vault.validation import Verdict, classify


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.VALID),
        (204, Verdict.VALID),
        (429, Verdict.VALID),
        (401, Verdict.INVALID),
        (403, Verdict.INVALID),
        (404, Verdict.UNKNOWN),
        (500, Verdict.UNKNOWN),
        (503, Verdict.UNKNOWN),
        (None, Verdict.UNKNOWN),
    ],
)
def test_probe_status_to_verdict(status: int | None, verdict: Verdict):
    assert classify(status) is verdict
