"""Vault and cache settings: defaults, and a malformed master key refused in one line."""

from __future__ import annotations

import base64
import os

import pytest

from app.config import ConfigError, load_settings

BASE = {
    "ALPHA_API_KEYS": "k1",
    "ALPHA_BASE_URL": "http://127.0.0.1:1/v1",
    "ALPHA_DEFAULT_MODEL": "m",
}


class TestSettings:
    def test_defaults(self):
        settings = load_settings(BASE)
        assert settings.keypool_master_key is None
        assert (settings.vault_refresh_s, settings.cache_ttl_s, settings.cache_max_entries) == (
            10,
            300,
            100,
        )
        assert (settings.cache_mode, settings.cache_scope) == ("deterministic", "user")

    def test_a_32_byte_base64_master_key_is_accepted_and_hidden(self):
        key = base64.b64encode(os.urandom(32)).decode()
        settings = load_settings({**BASE, "KEYPOOL_MASTER_KEY": key})
        assert settings.keypool_master_key is not None
        assert key not in repr(settings)

    @pytest.mark.parametrize(
        "value",
        [
            "not base64!",
            # a random 16-byte key, with a fixed id: every xdist worker collects the same name
            pytest.param(base64.b64encode(os.urandom(16)).decode(), id="16-random-bytes"),
            "QUJD",
        ],
    )
    def test_a_malformed_master_key_is_one_clear_error_without_the_value(self, value: str):
        with pytest.raises(ConfigError) as caught:
            load_settings({**BASE, "KEYPOOL_MASTER_KEY": value})
        message = str(caught.value)
        assert message.startswith("invalid setting KEYPOOL_MASTER_KEY")
        assert "\n" not in message
        assert value not in message

    @pytest.mark.parametrize(
        ("var", "value"), [("CACHE_MODE", "sometimes"), ("CACHE_SCOPE", "team")]
    )
    def test_unknown_cache_choices_are_refused(self, var: str, value: str):
        with pytest.raises(ConfigError, match=var):
            load_settings({**BASE, var: value})
