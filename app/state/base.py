"""The KeyStateStore interface every backend implements (DESIGN.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.keys.breaker import CircuitState
from app.keys.model import Ask, Grant, KeyStatus, Release


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    """A copy of one provider's state for read-only views (health, probes)."""

    keys: list[KeyStatus]
    circuit: CircuitState
    shared_limit_until: float | None = None  # an account-wide limit's end, while it lasts


class KeyStateStore(Protocol):
    """All key state goes through here so several gateway processes can share it.

    Selection and transitions are decided by `app.keys` (`KeyPool.acquire` / `release`); a store
    only keeps the state and runs those as atomic steps. One attempt is one `acquire` (breaker,
    selection, in-flight count, budget and reservation together) and one `release`: two round
    trips for a shared backend, whatever the pool looks like. A request that had to wait for
    its turn adds one `recheck` before it goes.
    """

    async def acquire(self, provider: str, now: float, ask: Ask) -> Grant:
        """Choose a key for one attempt and count it in flight (see `Ask` and `Grant`)."""
        ...

    async def release(self, done: Release) -> None:
        """Record a granted attempt's outcome on its key and on the provider's breaker."""
        ...

    async def recheck(self, provider: str, index: int, now: float, tokens: int = 0) -> float:
        """Before a reserved turn starts: seconds it must still wait (0: go now).

        A wait may re-book the turn (`KeyPool.recheck`), so call it once per reserved turn.
        """
        ...

    async def next_provider_offset(self, count: int) -> int:
        """Path A round-robin across providers."""
        ...

    async def snapshot(self, provider: str, now: float) -> ProviderSnapshot: ...

    async def set_disabled(self, provider: str, index: int, disabled: bool) -> KeyStatus: ...

    async def record_probe(
        self, provider: str, index: int, *, ok: bool, auth_failed: bool, now: float
    ) -> KeyStatus:
        """A recovery probe's result; never counted as a request and never seen by the breaker."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ProbeClaims(Protocol):
    """A store shared by several instances lets one of them at a time probe a key."""

    async def claim_probe(self, provider: str, index: int, ttl_s: float) -> bool:
        """True when this instance may probe the key now; the claim lapses after `ttl_s`."""
        ...


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """A provider's key list after a change (a vault key added or deleted).

    `moved_from[i]`: the old index of the key now at i (None: a new key), so state follows keys.
    `fields[i]`: the key's stable record name in a shared store ("<index>" for environment keys,
    "v<id>" for vault keys), so instances on different layouts never touch each other's keys.
    `weights[i]`: the weighted strategy's weight of the key now at i.
    """

    moved_from: tuple[int | None, ...]
    fields: tuple[str, ...]
    weights: tuple[float, ...]


class ResizableStore(Protocol):
    """A store whose providers' key lists can change while it serves (the key vault)."""

    def resize(self, provider: str, layout: KeyLayout) -> None:
        """Apply the new list at once; in-flight attempts granted before must be re-indexed by
        the caller (see `app.chat.directory`), or dropped when their key is gone."""
        ...
