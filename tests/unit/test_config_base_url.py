"""A base URL every request would fail on stops the start with one clear line."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings


@pytest.mark.parametrize(
    "url",
    ["notaurl", "ftp://h/v1", "http://h:99999/v1", "http://h:0/v1", "http://u:hunter2@h/v1"],
)
def test_an_unusable_base_url_is_one_line_without_its_secrets(url: str) -> None:
    env = {"ACME_API_KEYS": "k1", "ACME_BASE_URL": url, "ACME_DEFAULT_MODEL": "m"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert "ACME_BASE_URL" in message
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["https://api.example.com/v1", "http://127.0.0.1:8080/v1/"])
def test_usable_base_urls_start(url: str) -> None:
    env = {"ACME_API_KEYS": "k1", "ACME_BASE_URL": url, "ACME_DEFAULT_MODEL": "m"}
    assert load_settings(env).providers[0].base_url == url.rstrip("/")
