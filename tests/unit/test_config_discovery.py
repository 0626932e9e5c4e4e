"""Provider discovery takes only the *_API_KEY variables meant for an LLM provider."""

from __future__ import annotations

import logging

import pytest

from app.config import load_settings, parse_providers

GROQ = "gsk-groq-0123456789abcdef"
OTHER = "lsv2-langsmith-0123456789abcdef"


def names(env: dict[str, str], order: str | None = None) -> list[str]:
    return [p.name for p in parse_providers(env, order)]


def test_an_unrelated_api_key_does_not_stop_the_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keypool.config")
    settings = load_settings({"GROQ_API_KEYS": GROQ, "LANGSMITH_API_KEY": OTHER})
    assert [p.name for p in settings.providers] == ["groq"]
    lines = [r.getMessage() for r in caplog.records if "LANGSMITH_API_KEY" in r.getMessage()]
    assert len(lines) == 1
    assert caplog.records[0].levelno == logging.INFO
    assert OTHER not in caplog.text


def test_a_custom_provider_needs_its_base_url() -> None:
    env = {"MYLLM_API_KEY": OTHER, "GROQ_API_KEY": GROQ}
    assert names(env) == ["groq"]
    assert names(
        {**env, "MYLLM_BASE_URL": "http://127.0.0.1:9/v1", "MYLLM_DEFAULT_MODEL": "m"}
    ) == [
        "myllm",
        "groq",
    ]


def test_llm_providers_restricts_the_pool_to_the_named_ones() -> None:
    # OPENAI is in the catalog, so an exported personal OPENAI_API_KEY is discovered;
    # LLM_PROVIDERS is how an operator keeps it out.
    env = {"OPENAI_API_KEY": OTHER, "GROQ_API_KEY": GROQ}
    assert names(env) == ["openai", "groq"]
    assert names(env, "groq") == ["groq"]
