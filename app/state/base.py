"""The KeyStateStore interface every backend implements (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from app.keys.breaker import CircuitState
from app.keys.model import KeyStatus, Outcome, RateLimitSignal


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    """A copy of one provider's state for read-only views (health, probes, batch planning)."""

    keys: list[KeyStatus]
    circuit: CircuitState


class KeyStateStore(Protocol):
    """All key state goes through here so several gateway processes can share it.

    Selection and transitions are decided by `app.keys`; a store only keeps and serialises them.
    One `acquire` is one round trip for a shared backend.
    """

    async def acquire(
        self,
        provider: str,
        now: float,
        *,
        exclude: Collection[int] = (),
        preferred: int | None = None,
    ) -> int | None:
        """Choose a usable key and count it in flight; None when none outside `exclude` is usable."""
        ...

    async def release(
        self,
        provider: str,
        index: int | None,
        outcome: Outcome,
        now: float,
        signal: RateLimitSignal,
    ) -> None:
        """Record the attempt's outcome on the key and on the provider's breaker.

        `index` None settles only the breaker (a half-open trial that found no usable key).
        """
        ...

    async def allow_provider(self, provider: str, now: float) -> bool:
        """The provider's breaker admits a request (half-open admits one trial)."""
        ...

    async def next_provider_offset(self, count: int) -> int:
        """Path A round-robin across providers."""
        ...

    async def retry_after(self, provider: str, now: float) -> float | None:
        """Seconds until the provider's first cooling key is usable, if any key is cooling."""
        ...

    async def snapshot(self, provider: str, now: float) -> ProviderSnapshot: ...

    async def set_disabled(self, provider: str, index: int, disabled: bool) -> KeyStatus: ...

    async def record_probe(
        self, provider: str, index: int, *, ok: bool, auth_failed: bool, now: float
    ) -> KeyStatus: ...

    async def aclose(self) -> None: ...
