"""Run-time state of the fake provider: each key's behaviour, rate windows and counters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from app.demo.fake.config import FakeProviderConfig, KeyBehaviour
from app.demo.fake.limits import KeyLimiter
from app.demo.fake.stats import KeyCounters, ProviderStats


class KeyRuntime:
    """One key as the server sees it; the behaviour is swapped whole when a test changes it."""

    __slots__ = ("behaviour", "counters", "limiter", "shared")

    def __init__(
        self, behaviour: KeyBehaviour, counters: KeyCounters, shared: KeyLimiter | None = None
    ) -> None:
        self.behaviour = behaviour
        self.limiter = KeyLimiter(behaviour.rps, behaviour.rpm)
        self.counters = counters
        self.shared = shared  # the account-wide bucket, when the fake has one

    @property
    def limiters(self) -> tuple[KeyLimiter, ...]:
        """The shared bucket first, so a full account answers with the account's reset."""
        return (self.limiter,) if self.shared is None else (self.shared, self.limiter)

    def update(self, behaviour: KeyBehaviour) -> None:
        # Keep the request log when the limits are unchanged, so a latency tweak
        # does not hand the key a fresh window.
        if (behaviour.rps, behaviour.rpm) != (self.behaviour.rps, self.behaviour.rpm):
            self.limiter = KeyLimiter(behaviour.rps, behaviour.rpm)
        self.behaviour = behaviour


class FakeProviderState:
    """Everything the handlers share. Only touched from the server's event loop."""

    def __init__(self, config: FakeProviderConfig) -> None:
        self.config = config
        self.models = frozenset(config.models) if config.models else None
        self.stats = ProviderStats()
        self.keys: dict[str, KeyRuntime] = {}
        shared = (config.shared_rps, config.shared_rpm)
        self.shared = KeyLimiter(*shared) if shared != (None, None) else None
        for key, behaviour in config.keys.items():
            self.set_key(key, behaviour)
        # Replaced by the runner once the server exists.
        self.count_connections: Callable[[], int] = lambda: 0

    def set_key(self, key: str, behaviour: KeyBehaviour) -> None:
        runtime = self.keys.get(key)
        if runtime is None:
            self.keys[key] = KeyRuntime(behaviour, self.stats.for_key(key), self.shared)
        else:
            runtime.update(behaviour)

    def update_key(self, key: str, changes: Mapping[str, Any]) -> KeyBehaviour:
        """Apply a partial behaviour to a key, adding it (from the default) if unknown."""
        runtime = self.keys.get(key)
        base = runtime.behaviour if runtime is not None else self.config.default
        behaviour = base.with_changes(changes)
        self.set_key(key, behaviour)
        return behaviour

    def lookup(self, authorization: str | None) -> KeyRuntime | None:
        """The key named by a `Bearer` header, or None when the fake should answer 401."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        key = authorization[7:].strip()
        runtime = self.keys.get(key)
        if runtime is None and key and self.config.accept_any_key:
            self.set_key(key, self.config.default)
            runtime = self.keys[key]
        return runtime

    def reset(self) -> None:
        """Zero the counters and empty every rate window."""
        self.stats.reset()
        for runtime in self.keys.values():
            runtime.limiter.clear()
        if self.shared is not None:
            self.shared.clear()

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot(self.count_connections())

    def behaviours(self) -> dict[str, dict[str, Any]]:
        return {key: dataclasses.asdict(rt.behaviour) for key, rt in self.keys.items()}
