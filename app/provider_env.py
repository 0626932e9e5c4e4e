"""Providers from the environment: which are configured, their keys, fingerprints and limits.

Pure parsing (no settings object, no I/O): `config.load_settings` calls `parse_providers`, and the
vault and tests build `ProviderConfig`s from it too.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from app.catalog import CATALOG
from app.model_groups import GroupConfigError, SharedLimit, parse_shared_limit

logger = logging.getLogger("keypool.config")

MAX_NUMBERED_KEY = 100
_N = TypeVar("_N", int, float)
_KEYS_VAR = re.compile(r"^([A-Z][A-Z0-9_]*?)_API_KEYS$")
_KEY_VAR = re.compile(r"^([A-Z][A-Z0-9_]*?)_API_KEY(?:_(\d+))?$")


class ConfigError(Exception):
    """Configuration that cannot start a gateway; the message is shown to the operator as is."""


class ApiKey:
    """A provider key; its repr and str show only the fingerprint, so it cannot leak by accident."""

    __slots__ = ("fingerprint", "secret")

    def __init__(self, secret: str, fingerprint: str) -> None:
        self.secret = secret
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"ApiKey({self.fingerprint})"

    __str__ = __repr__


def fingerprint(provider: str, index: int, secret: str) -> str:
    """`<provider>:<index>:<last 4>` for real-length keys; a short hash when 4 chars would be most of it."""
    tail = secret[-4:] if len(secret) >= 16 else hashlib.sha256(secret.encode()).hexdigest()[:6]
    return f"{provider}:{index}:{tail}"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    base_url: str
    default_model: str
    keys: tuple[ApiKey, ...]
    models: tuple[str, ...] = ()
    rpm_per_key: int | None = None
    tpm_per_key: int | None = None
    timeout_s: float = 60.0
    key_weights: tuple[float, ...] = field(default=())
    shared_limit: SharedLimit = "auto"
    # Back-to-back starts a key that idled may take (pacing.Pace.burst); 1 spaces every start.
    burst_per_key: int = 1

    def serves(self, model: str) -> bool:
        return model == self.default_model or model in self.models


def parse_providers(env: Mapping[str, str], order: str | None = None) -> list[ProviderConfig]:
    """Providers with at least one key, in LLM_PROVIDERS order (else discovery order)."""
    names = _split(order) if order else _discover_names(env)
    providers = []
    for name in dict.fromkeys(n.lower() for n in names):
        keys = parse_keys(env, name)
        if not keys:
            logger.warning("provider %s has no keys and is not configured", name)
            continue
        providers.append(_provider(env, name, keys))
    return providers


def parse_keys(env: Mapping[str, str], provider: str) -> list[str]:
    """`<P>_API_KEYS` then `<P>_API_KEY`, `<P>_API_KEY_2`…`_100`: trimmed, empties and duplicates dropped."""
    prefix = provider.upper()
    raw = _split(env.get(f"{prefix}_API_KEYS", ""))
    raw += _split(env.get(f"{prefix}_API_KEY", ""))
    for n in range(2, MAX_NUMBERED_KEY + 1):
        raw += _split(env.get(f"{prefix}_API_KEY_{n}", ""))
    keys: list[str] = []
    for position, key in enumerate(raw):
        if key in keys:
            logger.warning(
                "provider %s: duplicate key at position %d dropped (%s)",
                provider,
                position,
                fingerprint(provider, keys.index(key), key),
            )
            continue
        keys.append(key)
    return keys


def _discover_names(env: Mapping[str, str]) -> list[str]:
    """Only names the operator meant as providers: LANGSMITH_API_KEY and friends are not LLMs."""
    names: list[str] = []
    for var in env:
        match = _KEYS_VAR.match(var) or _KEY_VAR.match(var)
        if match and match.group(1) not in ("LLM", "ADMIN"):
            prefix = match.group(1)
            if prefix.lower() in CATALOG or env.get(f"{prefix}_BASE_URL"):
                names.append(prefix.lower())
            else:
                logger.info(
                    "%s ignored: %s is neither a catalog provider nor has %s_BASE_URL",
                    var,
                    prefix.lower(),
                    prefix,
                )
    return sorted(set(names), key=names.index)


def _provider(env: Mapping[str, str], name: str, secrets: list[str]) -> ProviderConfig:
    prefix = name.upper()
    entry = CATALOG.get(name)
    base_url = env.get(f"{prefix}_BASE_URL") or (entry.base_url if entry else None)
    default_model = env.get(f"{prefix}_DEFAULT_MODEL") or (entry.default_model if entry else None)
    if not base_url or not default_model:
        missing = f"{prefix}_BASE_URL" if not base_url else f"{prefix}_DEFAULT_MODEL"
        raise ConfigError(
            f"provider {name!r} is not in the built-in catalog: set {missing} "
            f"(an OpenAI-compatible endpoint ending in /v1)"
        )
    _check_base_url(f"{prefix}_BASE_URL", base_url)
    return ProviderConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        default_model=default_model,
        keys=tuple(ApiKey(s, fingerprint(name, i, s)) for i, s in enumerate(secrets)),
        models=tuple(_split(env.get(f"{prefix}_MODELS", ""))),
        rpm_per_key=_number(
            env, f"{prefix}_RPM_PER_KEY", int, entry.rpm_per_key if entry else None
        ),
        tpm_per_key=_number(
            env, f"{prefix}_TPM_PER_KEY", int, entry.tpm_per_key if entry else None
        ),
        timeout_s=_number(env, f"{prefix}_TIMEOUT_S", float, 60.0) or 60.0,
        key_weights=_weights(env, prefix, len(secrets)),
        shared_limit=_shared_limit(env, prefix),
        burst_per_key=max(1, _number(env, f"{prefix}_BURST_PER_KEY", int, 1) or 1),
    )


def _check_base_url(var: str, url: str) -> None:
    """A URL every request would fail on stops the start instead (never echoed: it may hold a
    password)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port in (-1, 0):
        raise ConfigError(f"{var} must be an http(s) URL such as https://api.example.com/v1")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{var} must not contain user:password@ (keys go in <P>_API_KEYS)")


def _shared_limit(env: Mapping[str, str], prefix: str) -> SharedLimit:
    try:
        return parse_shared_limit(env, prefix)
    except GroupConfigError as exc:
        raise ConfigError(str(exc)) from None


def _number(env: Mapping[str, str], var: str, kind: type[_N], default: _N | None) -> _N | None:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{var} must be positive, got {raw!r}")
    return value


def _weights(env: Mapping[str, str], prefix: str, count: int) -> tuple[float, ...]:
    raw = _split(env.get(f"{prefix}_KEY_WEIGHTS", ""))
    if not raw:
        return (1.0,) * count
    try:
        weights = [float(w) for w in raw]
    except ValueError:
        raise ConfigError(f"{prefix}_KEY_WEIGHTS must be comma-separated numbers") from None
    if any(w < 0 for w in weights):
        raise ConfigError(f"{prefix}_KEY_WEIGHTS must not be negative")
    return tuple((weights + [1.0] * count)[:count])


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
