"""Fake provider configuration: per-key behaviour, the provider config, the demo scenario."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Mode = Literal[
    "ok",
    "rate_limited",
    "quota_exceeded",
    "error_500",
    "bad_request",
    "unauthorized",
    "forbidden",
    "hang",
    "reset",
    "stream_fail_before_first",
    "stream_cut",
    "echo_key",
]
MODES: frozenset[str] = frozenset(get_args(Mode))
DEFAULT_MODELS = ("fake-small", "fake-large")


@dataclass(frozen=True, slots=True)
class KeyBehaviour:
    """How the fake answers one API key.

    `rps`/`rpm` are enforced as sliding logs over 1 s / 60 s (see `limits.py`);
    `retry_after_s` only matters in mode `rate_limited` (None: no Retry-After, no announced reset).
    """

    mode: Mode = "ok"
    cut_after: int = 2
    rps: float | None = None
    rpm: float | None = None
    retry_after_s: float | None = 1.0
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    chunks: int = 5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {sorted(MODES)}")
        for name in ("rps", "rpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive, got {limit!r}")
        if self.chunks < 1 or self.cut_after < 0:
            raise ValueError("chunks must be >= 1 and cut_after >= 0")

    def with_changes(self, changes: Mapping[str, Any]) -> KeyBehaviour:
        """Return a copy with `changes` applied; unknown field names raise ValueError."""
        unknown = set(changes) - BEHAVIOUR_FIELDS
        if unknown:
            raise ValueError(f"unknown KeyBehaviour fields: {sorted(unknown)}")
        return dataclasses.replace(self, **changes)


BEHAVIOUR_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(KeyBehaviour))


@dataclass(slots=True)
class FakeProviderConfig:
    """Keys the fake knows, the models it serves (None or empty: any) and the default behaviour.

    `default` is used for keys added at run time and, with `accept_any_key`, for unknown keys.
    `shared_rps`/`shared_rpm` make an account-wide bucket every key draws from as well as its
    own: once it is empty every key answers 429 with the same announced reset.
    """

    keys: dict[str, KeyBehaviour] = field(default_factory=dict)
    models: list[str] | None = field(default_factory=lambda: list(DEFAULT_MODELS))
    accept_any_key: bool = False
    default: KeyBehaviour = field(default_factory=KeyBehaviour)
    shared_rps: float | None = None
    shared_rpm: float | None = None

    def __post_init__(self) -> None:
        for name in ("shared_rps", "shared_rpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive, got {limit!r}")


def config_from_dict(data: Mapping[str, Any]) -> FakeProviderConfig:
    """Build a config from its JSON shape; each key's dict is applied on top of `default`."""
    default = KeyBehaviour().with_changes(data.get("default") or {})
    raw_keys = data.get("keys") or {}
    if isinstance(raw_keys, list):  # a bare list of key names is accepted for convenience
        return config_from_dict({**data, "keys": dict.fromkeys(raw_keys)})
    keys = {str(k): default.with_changes(v or {}) for k, v in raw_keys.items()}
    models = data.get("models", list(DEFAULT_MODELS))
    return FakeProviderConfig(
        keys=keys,
        models=list(models) if models else None,
        accept_any_key=bool(data.get("accept_any_key", False)),
        default=default,
        shared_rps=_optional_float(data.get("shared_rps")),
        shared_rpm=_optional_float(data.get("shared_rpm")),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def demo_config() -> FakeProviderConfig:
    """The `make run` scenario: two providers' worth of keys, one rate-limited, one revoked."""
    default = KeyBehaviour(latency_ms=20, ttft_ms=20, chunk_interval_ms=15, chunks=8)
    keys = {f"{p}-key-{i}": default for p in ("alpha", "beta") for i in range(3)}
    keys["alpha-key-1"] = default.with_changes({"mode": "rate_limited", "retry_after_s": 300.0})
    keys["beta-key-1"] = default.with_changes({"mode": "unauthorized"})
    return FakeProviderConfig(keys=keys, models=list(DEFAULT_MODELS), default=default)
