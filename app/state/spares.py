"""One grant held ahead per provider: the Redis round trip of an acquire off the request path.

With shared state every attempt waits one round trip for its key (0.05-0.2 ms on loopback, more
across hosts), the one cost in-process state does not have. For a provider whose keys are not
paced, a grant of a key that is free *now* stays good until that key's state changes, so as a
request is handed its key this instance already asks Redis for the next one (through the same
atomic acquire: nothing about the decision changes, only when it is made) and keeps that grant
for the next first attempt that asks the same: it gets its key without waiting.

A spare is only ever the answer the same acquire would have given a moment earlier, and it is
dropped (handed back as `Outcome.UNUSED`, which also takes back the request it counted) when
it could be stale: after `ttl_s`, when a release of this instance may change which keys are
free (a failure, a key announced empty, or limits learned: a paced key's turn is a slot in time,
not to be taken ahead, so a provider whose keys are paced, configured or learned, gets no
spares), when the key list changes, or when Redis goes away. What another instance learns in
between is seen by a spare at most `ttl_s` late, the cost of which is one failed attempt and the
usual fallback. While a spare waits, its key counts one request in flight (for at most `ttl_s`,
well under the stall floor), and keys are handed out in the order Redis chose them: a request
arriving while the ask is on its way waits for that answer rather than queue a second ask.

Pure bookkeeping (no I/O): `DegradingStore` asks, keeps and gives back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.keys.learned import LearnedLimits, learn
from app.keys.model import Ask, Grant, Outcome, RateLimitSignal, Release

# How long a spare grant stays good: long enough to bridge the gap between two requests of a
# busy instance (10 per second and more), short enough that another instance's news is never
# long ignored.
SPARE_TTL_S = 0.1


@dataclass(frozen=True, slots=True)
class Spare:
    """A grant of key `index` made at `asked_at` for first attempts preferring `preferred`."""

    index: int
    preferred: int | None
    asked_at: float
    generation: int  # the key list's layout when it was asked (renumber.Renumbering)
    news: int  # the provider's news count when it was asked (`SpareGrants.hear`)


def plain(ask: Ask) -> bool:
    """A first attempt with no conditions a spare could miss (no tried or busy keys)."""
    return ask.admit and not ask.exclude and not ask.avoid


def ahead(ask: Ask) -> Ask:
    """What the spare for the next request like `ask` is asked with: a key free now."""
    return Ask(preferred=ask.preferred)


def keepable(grant: Grant) -> bool:
    """Only a key free now is worth keeping (a reserved turn is a slot in time)."""
    return grant.index is not None and grant.delay_s == 0 and not grant.after_cooldown


def news(done: Release) -> bool:
    """Whether a release may change which keys are free now: a failure, a key announced empty,
    or limits that pace the keys from now on (`teaches_limits`)."""
    signal = done.signal
    return (
        done.outcome is not Outcome.OK
        or signal.exhausted_for_s is not None
        or teaches_limits(signal)
    )


def teaches_limits(signal: RateLimitSignal) -> bool:
    """Whether these headers pace a key from now on (learned.py; an unlimited budget, say a
    limit with no reset, teaches nothing)."""
    if signal.limit_requests is None and signal.limit_tokens is None:
        return False
    learned = learn(LearnedLimits(), signal)
    return learned.requests is not None or learned.tokens is not None


class SpareGrants:
    """The spare of each provider, the providers with an ask on its way, and those not to
    keep spares for (their keys learned limits: paced)."""

    def __init__(self, ttl_s: float = SPARE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.held: dict[str, Spare] = {}
        self.asking: dict[str, int | None] = {}  # provider → `preferred` of its ask on its way
        self.paced: set[str] = set()
        self.news: Counter[str] = Counter()  # per provider: releases that said something

    def hear(self, provider: str) -> list[tuple[str, Spare]]:
        """A release said something about the provider: its spare, and any spare asked before
        now and still on its way, may be stale. Returns the held one to give back."""
        self.news[provider] += 1
        return self.drop(provider)

    def current(self, provider: str, spare: Spare) -> bool:
        """Nothing was heard of the provider since `spare` was asked."""
        return spare.news == self.news[provider]

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def wanted(self, provider: str, ask: Ask, configured_pace: bool) -> bool:
        """Whether requests like `ask` on this provider are served from spares."""
        return self.enabled and not configured_pace and provider not in self.paced and plain(ask)

    def should_ask(self, provider: str) -> bool:
        return provider not in self.held and provider not in self.asking

    def joinable(self, provider: str, ask: Ask) -> bool:
        """An ask on its way would give this request its key (it is ahead of any new one)."""
        return provider in self.asking and self.asking[provider] == ask.preferred

    def take(
        self, provider: str, ask: Ask, generation: int, now: float
    ) -> tuple[int | None, Spare | None]:
        """(the spare's key for this request, or None; a stale spare to give back, or None)."""
        spare = self.held.pop(provider, None)
        if spare is None:
            return None, None
        if (
            spare.generation == generation
            and self.current(provider, spare)
            and spare.preferred == ask.preferred
            and now - spare.asked_at <= self.ttl_s
        ):
            return spare.index, None
        return None, spare

    def expired(self, now: float) -> list[tuple[str, Spare]]:
        """Remove and return the spares older than the TTL."""
        old = [(p, s) for p, s in self.held.items() if now - s.asked_at > self.ttl_s]
        for provider, _ in old:
            del self.held[provider]
        return old

    def drop(self, provider: str | None = None) -> list[tuple[str, Spare]]:
        """Remove and return one provider's spare, or every spare."""
        if provider is None:
            dropped = list(self.held.items())
            self.held.clear()
            return dropped
        spare = self.held.pop(provider, None)
        return [] if spare is None else [(provider, spare)]
