"""CACHE_MODE and the per-request "cache" flag."""

from __future__ import annotations

import pytest

from app.cache.policy import should_cache


@pytest.mark.parametrize(
    ("mode", "params", "explicit", "cached"),
    [
        ("off", {"temperature": 0}, None, False),
        ("off", {}, True, False),
        ("deterministic", {"temperature": 0}, None, True),
        ("deterministic", {"temperature": 0.0}, None, True),
        ("deterministic", {"temperature": 0.7}, None, False),
        ("deterministic", {}, None, False),
        ("deterministic", {"temperature": 0.7}, True, True),
        ("deterministic", {"temperature": 0}, False, False),
        ("all", {"temperature": 1.0}, None, True),
        ("all", {}, False, False),
    ],
)
def test_should_cache(mode: str, params: dict[str, float], explicit: bool | None, cached: bool):
    assert should_cache(mode, params, explicit) is cached
