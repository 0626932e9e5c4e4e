"""Settings from the environment (and `.env`); providers are parsed by `provider_env`."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from typing import Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.model_groups import (
    DEFAULT_TIER_WEIGHTS,
    GroupConfigError,
    ModelGroup,
    parse_model_groups,
    parse_tier_weights,
)
from app.provider_env import (
    ApiKey,
    ConfigError,
    ProviderConfig,
    fingerprint,
    parse_keys,
    parse_providers,
)

__all__ = [  # the provider names stay importable from here, where most callers look
    "ApiKey",
    "ConfigError",
    "ProviderConfig",
    "Settings",
    "fingerprint",
    "load_settings",
    "parse_keys",
    "parse_providers",
]

# uvicorn's websocket keep-alive for `keypool serve` (idle /api/chat/ws sockets stay open).
WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0

logger = logging.getLogger("keypool.config")
_access_logger = logging.getLogger("keypool.access")

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# What users paste (Heroku, docs, psql) → the async drivers the gateway ships with.
_DB_SCHEMES = {
    "postgres://": "postgresql+asyncpg://",
    "postgresql://": "postgresql+asyncpg://",
    "sqlite://": "sqlite+aiosqlite://",  # sqlite:///file.db, and sqlite:// (in memory)
}
_DB_DRIVERS = ("postgresql+asyncpg://", "sqlite+aiosqlite://")
MASTER_KEY_BYTES = 32


class Settings(BaseSettings):
    """Process-wide settings; provider sections are parsed separately by `parse_providers`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    llm_providers: str | None = None
    key_selection: Literal["round_robin", "random", "weighted", "least_busy"] = "round_robin"
    provider_rotation: Literal["round_robin", "priority"] = "round_robin"
    database_url: str = "sqlite+aiosqlite:///./keypool.db"
    redis_url: SecretStr | None = None
    keypool_redis_prefix: str = "keypool:"
    redis_timeout_s: float = Field(default=0.5, gt=0)
    # How long a grant asked ahead for the next request stays good (app/state/spares.py); 0: off.
    redis_spare_grant_ms: float = Field(default=100.0, ge=0, le=400)
    admin_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    metrics_enabled: bool = True  # false: nothing recorded for Prometheus, /metrics answers 404
    # true: FastAPI's own OpenTelemetry instrumentation traces requests when an OpenTelemetry SDK
    # with providers is installed; off, FastAPI skips looking for providers on every request.
    opentelemetry_enabled: bool = False
    docs_enabled: bool = False
    new_users_per_minute: int | None = Field(default=600, ge=0)
    max_message_chars: int = Field(default=50_000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    body_read_timeout_s: float = Field(default=15.0, gt=0)
    ws_max_message_bytes: int = Field(default=1_048_576, ge=1024)
    ws_max_inflight: int = Field(default=8, ge=1)
    max_streams_per_user: int | None = Field(default=None, ge=1)
    key_groups: int | None = Field(default=None, ge=1)
    request_deadline_s: float = Field(default=30.0, gt=0)
    pacing_max_wait_s: float = Field(default=0.25, ge=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_s: float = Field(default=60.0, gt=0)
    min_active_keys: int = Field(default=5, ge=0)
    probe_interval_s: float = Field(default=30.0, gt=0)
    db_auto_migrate: bool = True
    stats_flush_interval_s: float = Field(default=1.0, gt=0)
    stats_spool_path: str = "./keypool-spool.jsonl"
    web_concurrency: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = False
    alert_webhook_url: str | None = None
    alert_cooldown_s: float = Field(default=300.0, ge=0)
    model_groups: str | None = None
    fair_queueing: bool = True
    tier_weights: str = DEFAULT_TIER_WEIGHTS
    # Response cache and key vault (both optional; the vault is off without a master key).
    keypool_master_key: SecretStr | None = None
    vault_refresh_s: float = Field(default=10.0, gt=0)
    cache_ttl_s: float = Field(default=300.0, gt=0)
    cache_max_entries: int = Field(default=100, ge=1)
    cache_mode: Literal["off", "deterministic", "all"] = "deterministic"
    cache_scope: Literal["user", "global"] = "user"
    # Access control (who may spend the keys); parsed and checked by `check_access`.
    auth_mode: Literal["none", "token", "trusted"] = "none"
    service_token: SecretStr | None = None
    tier_rpm: str = "free:5,pro:30,enterprise:100"
    tier_daily_budget_usd: str = "free:1,pro:20,enterprise:0"
    default_tier: str = "free"
    model_prices: str | None = None
    cors_origins: str | None = None
    host: str = "127.0.0.1"
    access_refresh_s: float = Field(default=10.0, gt=0)

    providers: list[ProviderConfig] = Field(default_factory=list, exclude=True)
    # MODEL_GROUPS parsed and checked against `providers` by load_settings.
    groups_by_name: dict[str, ModelGroup] = Field(default_factory=dict, exclude=True)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        # Checked here so a typo stops start-up with one message, not a traceback per worker.
        if url is not None and not url.get_secret_value().startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        return normalize_database_url(url)

    @field_validator("tier_weights")
    @classmethod
    def _tier_weights(cls, raw: str) -> str:
        parse_tier_weights(raw)
        return raw

    @property
    def tier_weight_map(self) -> dict[str, float]:
        """TIER_WEIGHTS as {tier: weight} (validated at start)."""
        return parse_tier_weights(self.tier_weights)

    @field_validator("keypool_master_key")
    @classmethod
    def _master_key_shape(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            decode_master_key(key.get_secret_value())
        return key

    @property
    def groups(self) -> int:
        """G: KEY_GROUPS, or the largest key count of any provider."""
        if self.key_groups:
            return self.key_groups
        return max((len(p.keys) for p in self.providers), default=1)


def normalize_database_url(url: str) -> str:
    """The async-driver form of a pasted URL; ValueError (never echoing it: passwords) if unusable."""
    url = url.strip()
    for plain, driver in _DB_SCHEMES.items():
        if url.startswith(plain):
            url = driver + url.removeprefix(plain)
            break
    try:
        make_url(url).port  # noqa: B018 - parses the port: "host:abc" fails here, not per request
        usable = url.startswith(_DB_DRIVERS)
    except (ArgumentError, ValueError):
        usable = False
    if not usable:
        raise ValueError(
            "must be postgresql://user:password@host/db or sqlite:///path.db "
            "(or their +asyncpg / +aiosqlite forms)"
        )
    return url


def decode_master_key(text: str) -> bytes:
    """KEYPOOL_MASTER_KEY's 32 bytes; the ValueError never quotes the value (it is a secret)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (generate one with the command in the README)") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"must decode to exactly {MASTER_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def read_environment(env_file: str | None = ".env") -> dict[str, str]:
    """The process environment over the `.env` file (real environment wins, as pydantic-settings does)."""
    values: dict[str, str] = {}
    if env_file and os.path.exists(env_file):
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings and providers from one mapping; raises ConfigError with one clear message."""
    env = read_environment() if env is None else env
    fields = {name: env[name.upper()] for name in Settings.model_fields if env.get(name.upper())}
    fields.pop("providers", None)
    fields.pop("groups_by_name", None)
    try:
        settings = Settings.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"invalid setting {str(first['loc'][0]).upper()}: {first['msg']}"
        ) from None
    check_access(settings)
    settings.providers = parse_providers(env, settings.llm_providers)
    if not settings.providers:
        raise ConfigError(
            "no LLM provider configured: set <PROVIDER>_API_KEYS (e.g. GROQ_API_KEYS=key1,key2) "
            "or run `keypool demo` for the built-in fake providers"
        )
    try:
        names = [p.name for p in settings.providers]
        settings.groups_by_name = parse_model_groups(settings.model_groups, names)
    except GroupConfigError as exc:
        raise ConfigError(str(exc)) from None
    return settings


def check_access(settings: Settings) -> None:
    """Parse the access settings once so a typo stops start-up with one clear message."""
    if settings.auth_mode == "trusted" and settings.service_token is None:
        raise ConfigError(
            "AUTH_MODE=trusted needs SERVICE_TOKEN (the shared secret of your backend)"
        )
    try:
        parse_tier_tables(settings.tier_rpm, settings.tier_daily_budget_usd, settings.default_tier)
        parse_prices(settings.model_prices)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_table(name: str, raw: str, kind: type[int] | type[float]) -> dict[str, float]:
    """`free:5,pro:30` → {"free": 5, "pro": 30}; ValueError names the variable and the bad item."""
    table: dict[str, float] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        tier, sep, value = item.partition(":")
        tier = tier.strip()
        try:
            number = kind(value.strip())
        except ValueError:
            number = -1
        if not sep or not tier or number < 0:
            raise ValueError(f"{name} must be `tier:number` pairs, comma-separated; got {item!r}")
        table[tier] = number
    if not table:
        raise ValueError(f"{name} names no tier")
    return table


def parse_tier_tables(
    rpm: str, budgets: str, default: str
) -> tuple[dict[str, int], dict[str, float]]:
    """TIER_RPM and TIER_DAILY_BUDGET_USD as dicts; budgets of tiers not in TIER_RPM are dropped."""
    rpm_table = {tier: int(v) for tier, v in parse_table("TIER_RPM", rpm, int).items()}
    for tier, value in rpm_table.items():
        if value < 1:
            raise ValueError(f"TIER_RPM: tier {tier!r} needs at least 1 request per minute")
    budget_table = parse_table("TIER_DAILY_BUDGET_USD", budgets, float)
    unknown = sorted(set(budget_table) - set(rpm_table))
    if unknown:  # e.g. TIER_RPM narrowed while the default budget table still names `pro`
        _access_logger.warning(
            "TIER_DAILY_BUDGET_USD: ignoring tiers not in TIER_RPM: %s", ", ".join(unknown)
        )
        budget_table = {t: v for t, v in budget_table.items() if t in rpm_table}
    if default not in rpm_table:
        raise ValueError(f"DEFAULT_TIER {default!r} is not a tier of TIER_RPM")
    return rpm_table, budget_table


def parse_prices(raw: str | None) -> dict[str, tuple[float, float]]:
    """`model=prompt/completion,...` → {model: (prompt, completion)}; ValueError on a bad item.

    The separator is the last `=`, so model ids keep any `/` they contain.
    """
    prices: dict[str, tuple[float, float]] = {}
    for item in (part.strip() for part in (raw or "").split(",")):
        if not item:
            continue
        model, sep, pair = item.rpartition("=")
        prompt, slash, completion = pair.partition("/")
        try:
            values = (float(prompt), float(completion))
        except ValueError:
            values = (-1.0, -1.0)
        if not sep or not slash or not model.strip() or min(values) < 0:
            raise ValueError(
                f"MODEL_PRICES items are `model=prompt/completion` (USD per 1M tokens); got {item!r}"
            )
        prices[model.strip()] = values
    return prices
