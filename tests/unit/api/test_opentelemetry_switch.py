"""FastAPI's own OpenTelemetry instrumentation is off unless OPENTELEMETRY_ENABLED asks for it.

FastAPI keeps what it was given in `_telemetry` (its `telemetry=` argument, merged over its
defaults); read here because with only opentelemetry-api installed no span can be observed."""

from __future__ import annotations

from app.config import load_settings
from app.main import create_app

ENV = {"ALPHA_API_KEYS": "k-0000000000000000", "ALPHA_BASE_URL": "http://x/v1",
       "ALPHA_DEFAULT_MODEL": "m"}  # fmt: skip


def _switches(env: dict[str, str]) -> tuple[object, object, object]:
    app = create_app(load_settings(env))
    config = app._telemetry
    return config["tracing"], config["metrics"], config["logs"]


def test_by_default_fastapi_does_not_look_for_opentelemetry_providers():
    assert _switches(ENV) == (False, False, False)


def test_the_switch_gives_fastapi_its_own_defaults_back():
    assert _switches({**ENV, "OPENTELEMETRY_ENABLED": "true"}) == (True, True, True)
