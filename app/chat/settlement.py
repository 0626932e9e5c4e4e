"""The one owner of every lease: a granted key is settled here, exactly once.

A lease ends in one of three places (a failed or cancelled attempt in the fallback loop, a
complete answer in `ChatService.complete`, the end of a stream), and each ends it the same way:
`lease.finish(outcome, signal, usage)`. The first call wins; `Settlement.settle` then fans out
to the consumers of a finished attempt:

1. the state store (`store.release`): the key's state, breaker and pacing;
2. the failure nudge (the prober wakes when a key fails);
3. the usage sink (stats writer and metrics; the place for budgets, caches and cost tracking);
4. the observer, if any (`ChatObserver`: upstream duration, key and breaker transitions as
   they happen, quota alerts), with the key's state read after the release where that is free.

A new feature that must see every finished attempt hooks here (a wrapping `UsageSink`, or a
subclass of `Settlement`), never at the three call sites.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.chat.observing import ChatObserver
from app.chat.pools import KeyPoolView, PoolResolver
from app.config import ProviderConfig
from app.keys.model import NO_SIGNAL, Outcome, RateLimitSignal, Release
from app.providers.client import Usage
from app.state.base import KeyStateStore
from app.state.peek import local_view
from app.usage import NullSink, UsageEvent, UsageSink

logger = logging.getLogger("keypool.chat")


def _nothing() -> None:
    return None


@dataclass(slots=True)
class Lease:
    """A key granted to one attempt; `finish` it exactly once, when the answer (or stream) ends.

    Later calls are no-ops, so every way out of an attempt may call it without counting twice.
    """

    provider: ProviderConfig
    key_index: int
    model: str
    group: int | None
    _owner: Settlement
    user_id: str | None = None
    _done: bool = False
    started_at: float | None = None
    # Where the key lives (the shared pool's layout then, or the user's own pool); None: the
    # settlement's store, in a layout that never changes.
    view: KeyPoolView | None = None

    @property
    def byok(self) -> bool:
        return self.view is not None and self.view.byok

    @property
    def label(self) -> int | str:
        """The key as answers and errors name it: its index, or "byok" for a user's own key."""
        return self.view.label(self.key_index) if self.view is not None else self.key_index

    async def finish(
        self,
        outcome: Outcome,
        signal: RateLimitSignal = NO_SIGNAL,
        usage: Usage | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        await self._owner.settle(self, outcome, signal, usage)


class Settlement:
    """Issues leases and settles them: store release, failure nudge, usage event."""

    def __init__(
        self,
        store: KeyStateStore,
        sink: UsageSink | None = None,
        clock: Callable[[], float] = time.time,
        *,
        on_key_failure: Callable[[], None] | None = None,
        pools: PoolResolver | None = None,
        observer: ChatObserver | None = None,
    ) -> None:
        self.store = store
        self.sink: UsageSink = sink or NullSink()
        self.clock = clock
        self.on_key_failure = on_key_failure or _nothing
        self.observer = observer
        self._peek = local_view(store) if observer is not None else None
        # Keys whose last peek read (active, closed), with when: a success of such a key cannot
        # change its state or its provider's breaker, so it skips the peek for a while. Any
        # other outcome forgets them all (a failure may move a breaker every key shares).
        self._calm: dict[tuple[str, int], float] = {}
        self.pools = pools

    def follow(self, lease: Lease) -> bool:
        """Bring the lease to the current layout of its pool (a vault key was added or deleted
        since it was granted); False when its key is gone (nothing of it may be settled on
        whichever key holds its old index now)."""
        if lease.view is None or self.pools is None:
            return True
        moved = self.pools.follow(lease.view, lease.key_index)
        if moved is None:
            return False
        lease.view, lease.key_index = moved
        lease.provider = moved[0].config
        return True

    def lease(
        self,
        provider: ProviderConfig,
        key_index: int,
        model: str,
        group: int | None,
        user_id: str | None = None,
    ) -> Lease:
        return Lease(provider, key_index, model, group, self, user_id)

    async def settle(
        self, lease: Lease, outcome: Outcome, signal: RateLimitSignal, usage: Usage | None
    ) -> None:
        """Called once per lease, by `Lease.finish`."""
        now = self.clock()
        latency = now - lease.started_at if lease.started_at is not None else None
        provider = lease.provider.name
        if self.follow(lease):
            store = lease.view.store if lease.view is not None else self.store
            release = Release(provider, lease.key_index, outcome, now, signal, latency)
            await store.release(release)
            if (outcome in _NUDGING or outcome.is_provider_failure) and not lease.byok:
                self.on_key_failure()
        if outcome is Outcome.CANCELLED and usage is None:
            return
        if self.observer is not None:
            self._observe(lease, outcome, now)
        self.sink.record(
            UsageEvent(
                provider=provider,
                key_index=lease.key_index,
                fingerprint=lease.provider.keys[lease.key_index].fingerprint,
                key_group=lease.group,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                error=outcome.is_key_failure,
                rate_limited=outcome is Outcome.RATE_LIMITED,
                at=now,
                model=lease.model,
                user_id=lease.user_id,
                byok=lease.byok,
                outcome=outcome.value,
                seconds=latency,
            )
        )

    def _observe(self, lease: Lease, outcome: Outcome, now: float) -> None:
        """Report the attempt; never fails the request (an observer bug is logged instead)."""
        assert self.observer is not None
        provider, index = lease.provider.name, lease.key_index
        try:
            # A user's own key is not in the shared pool the peek reads, and is named "byok"
            # (one label for every user's own key, never a per-user series).
            peek = self._peek if not lease.byok else None
            key_state = circuit = None
            if peek is not None and not self._is_calm(provider, index, outcome, now):
                seen = peek(provider, index, now)
                if seen is not None:
                    key_state, circuit = seen
                    if outcome is Outcome.OK and seen == _CALM:
                        self._calm[(provider, index)] = now
            quota_exceeded = outcome is Outcome.QUOTA_EXCEEDED
            if key_state is None and circuit is None and not quota_exceeded:
                return  # a calm key's success: nothing to report (its duration is in the usage)
            self.observer.attempt_settled(
                provider,
                "byok" if lease.byok else lease.provider.keys[index].fingerprint,
                key_state=key_state,
                circuit=circuit,
                quota_exceeded=quota_exceeded,
                reason=outcome.value,
            )
        except Exception as exc:
            logger.error("attempt observer failed: %s", type(exc).__name__)

    def _is_calm(self, provider: str, index: int, outcome: Outcome, now: float) -> bool:
        """True when this success needs no state peek: the key read (active, closed) lately."""
        calm = self._calm
        if outcome is not Outcome.OK:
            if calm:
                calm.clear()
            return False
        seen_at = calm.get((provider, index))
        return seen_at is not None and now - seen_at < CALM_S


_CALM = ("active", "closed")
CALM_S = 1.0  # how long a calm key's successes skip the peek (bounds a missed outside change)

# Key failures that wake the prober (provider failures do too).
_NUDGING = frozenset({Outcome.AUTH_FAILED, Outcome.QUOTA_EXCEEDED})
