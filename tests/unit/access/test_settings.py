"""Access settings stop a bad start-up with one clear message."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings

BASE = {"GROQ_API_KEYS": "gsk_0123456789abcdef"}


def test_defaults():
    settings = load_settings(BASE)
    assert settings.auth_mode == "none"
    assert settings.tier_rpm == "free:5,pro:30,enterprise:100"
    assert settings.tier_daily_budget_usd == "free:1,pro:20,enterprise:0"
    assert settings.default_tier == "free"
    assert settings.cors_origins is None


def test_trusted_mode_needs_a_service_token():
    with pytest.raises(ConfigError, match="AUTH_MODE=trusted needs SERVICE_TOKEN"):
        load_settings({**BASE, "AUTH_MODE": "trusted"})
    assert load_settings({**BASE, "AUTH_MODE": "trusted", "SERVICE_TOKEN": "s3cret"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTH_MODE": "open"}, "AUTH_MODE"),
        ({"TIER_RPM": "free=5"}, "TIER_RPM"),
        ({"TIER_DAILY_BUDGET_USD": "free:lots"}, "TIER_DAILY_BUDGET_USD"),
        ({"DEFAULT_TIER": "gold"}, "DEFAULT_TIER"),
        ({"MODEL_PRICES": "gpt=1"}, "MODEL_PRICES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_settings({**BASE, **env})


def test_service_token_never_shows_in_the_settings_repr():
    settings = load_settings({**BASE, "AUTH_MODE": "trusted", "SERVICE_TOKEN": "s3cret-value"})
    assert "s3cret-value" not in repr(settings)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
    ],
)
def test_only_loopback_hosts_are_quiet_in_none_mode(host: str, loopback: bool):
    from app.access.service import is_loopback

    assert is_loopback(host) is loopback
