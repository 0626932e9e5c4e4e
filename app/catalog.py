"""Built-in catalog of known OpenAI-compatible providers: base URL, default model, per-key limits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    base_url: str
    default_model: str
    rpm_per_key: int | None = None
    tpm_per_key: int | None = None


# Per-key limits are the providers' published free-tier figures (2025); they only feed pacing
# and the capacity estimate, and every one of them can be overridden with <P>_RPM_PER_KEY.
CATALOG: dict[str, CatalogEntry] = {
    "groq": CatalogEntry("https://api.groq.com/openai/v1", "llama-3.1-8b-instant", 30, 6_000),
    "cerebras": CatalogEntry("https://api.cerebras.ai/v1", "llama3.1-8b", 30, 60_000),
    "openai": CatalogEntry("https://api.openai.com/v1", "gpt-4o-mini", 500, 200_000),
    "xai": CatalogEntry("https://api.x.ai/v1", "grok-3-mini", 60, 100_000),
    "openrouter": CatalogEntry(
        "https://openrouter.ai/api/v1", "meta-llama/llama-3.1-8b-instruct", 20, None
    ),
    "together": CatalogEntry(
        "https://api.together.xyz/v1", "meta-llama/Llama-3.3-70B-Instruct-Turbo", 60, None
    ),
    "mistral": CatalogEntry("https://api.mistral.ai/v1", "mistral-small-latest", 60, 500_000),
    "deepseek": CatalogEntry("https://api.deepseek.com/v1", "deepseek-chat", None, None),
    "gemini": CatalogEntry(
        "https://generativelanguage.googleapis.com/v1beta/openai", "gemini-2.0-flash", 15, 1_000_000
    ),
}
