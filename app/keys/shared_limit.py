"""Account-wide (shared) rate limits: when one provider's keys are all limited together.

Some providers limit the account or the IP rather than the key, so every key answers 429 at
once and trying the next key only burns an attempt. Evidence of that, in `auto` mode: a 429 on a
second key within `window_s` of one on another key, both announcing resets that overlap (the
second 429 arrived before the first key's announced reset), the second key having had room of
its own by the provider's own word (`own_budget_left`, see `has_own_budget`): its last answer
announced requests left, or announced a reset that has passed since, with no other request of
it out. That condition tells an account apart from keys that each emptied their own bucket:
equally loaded keys with per-second limits run out in the same instant with resets that overlap
trivially, but a key's own bucket cannot refuse while it has announced room, nor once its
announced reset has passed and nothing else was sent on it. The provider then cools as a whole
until the later reset. Once a provider was seen limited per account, each later 429 that
announces a reset is the account's at once (one attempt, not two). `true` treats every 429 as
account-wide; `false` never does.

One detector per provider and process; it remembers only the last 429. Pure: callers pass the
time of each event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from app.keys.model import KeyStatus, RateLimitSignal
from app.keys.transitions import cool_down

SharedMode = Literal["auto", "true", "false"]
DETECTION_WINDOW_S = 2.0
# A forced (`true`) shared limit whose 429 announced no reset still cools the provider briefly.
UNANNOUNCED_COOLDOWN_S = 1.0


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """One 429: which key, when, and until when its reset was announced (None: not announced)."""

    key_index: int
    at: float
    reset_until: float | None
    own_budget_left: bool = True


class SharedLimitDetector:
    """Decides, from a provider's 429s, whether and until when the provider as a whole is limited."""

    __slots__ = ("_last", "_until", "mode", "seen", "window_s")

    def __init__(self, mode: SharedMode = "auto", window_s: float = DETECTION_WINDOW_S) -> None:
        self.mode = mode
        self.window_s = window_s
        self._last: LimitEvent | None = None
        self._until: float | None = None
        # Whether the provider's limit is known to be account-wide (always with `true`): its
        # keys' announced limits are then the account's, shared by all keys.
        self.seen = mode == "true"

    def observe(
        self, key_index: int, at: float, reset_until: float | None, own_budget_left: bool = True
    ) -> float | None:
        """Record a 429; returns the provider-wide cooldown end when this 429 starts or extends
        one, else None (the key alone cools, as before). `own_budget_left`: whether the key's
        own announced budget still had room (`has_own_budget`), read before the 429 is applied."""
        event = LimitEvent(key_index, at, reset_until, own_budget_left)
        previous, self._last = self._last, event
        if self.mode == "false":
            return None
        if self.mode == "true":
            return self._extend(
                reset_until if reset_until is not None else at + UNANNOUNCED_COOLDOWN_S
            )
        if self.seen and reset_until is not None:
            # Known to be limited per account: this 429 is the account's (and a shared limit
            # still on is kept honest), so the request does not spend a second attempt on it.
            return self._extend(reset_until)
        joint = _joint_reset(previous, event, self.window_s) if previous else None
        return self._extend(joint) if joint is not None else None

    def until(self, now: float) -> float | None:
        """The provider-wide cooldown end while it lasts (health: `shared_limit_until`)."""
        return self._until if self.active(now) else None

    def active(self, now: float) -> bool:
        return self._until is not None and now < self._until

    def renumber(self, moved_from: Sequence[int | None]) -> None:
        """Follow a new key list (`KeyPool.resize`): the last 429 stays its key's; a deleted
        key's 429 still counts as another key's (index -1)."""
        if self._last is None:
            return
        old = self._last.key_index
        new = next((i for i, m in enumerate(moved_from) if m == old), -1)
        self._last = dataclasses.replace(self._last, key_index=new)

    def clear(self) -> None:
        """Forget everything (an admin reset, or a test)."""
        self._last = self._until = None
        self.seen = self.mode == "true"

    def _extend(self, until: float) -> float:
        self.seen = True
        self._until = until if self._until is None else max(self._until, until)
        return self._until


def _joint_reset(first: LimitEvent, second: LimitEvent, window_s: float) -> float | None:
    """The later reset when two different keys were limited within `window_s` with announced
    resets that overlap; None when the two 429s say nothing about the account."""
    a, b = first.reset_until, second.reset_until
    if first.key_index == second.key_index or a is None or b is None:
        return None
    if not second.own_budget_left:
        return None  # its own bucket may simply be empty: nothing says the account is
    if abs(second.at - first.at) > window_s:
        return None
    # [at, reset_until] of each: they overlap when each starts before the other ends.
    if second.at < a and first.at < b:
        return max(a, b)
    return None


def has_own_budget(status: KeyStatus, now: float) -> bool:
    """Whether the key's own bucket had room by the provider's word, read as a 429 on it is
    released (before its answer is applied, so `in_flight` still counts that request).

    Its last answer announced requests left beyond what was sent since (`budget_left`, while
    its reset has not passed); or that announced reset has passed, which frees at least one
    request in any bucket (a sliding log's oldest entry, a fixed window, a refilled bucket),
    and no other request of the key is out.
    """
    left, reset_at = status.budget_left, status.budget_reset_at
    if left is None or reset_at is None:
        return False
    if reset_at > now:
        return left > 0
    return status.in_flight <= 1


def announced_reset(signal: RateLimitSignal, now: float) -> float | None:
    """When a 429 said its key is free again (Retry-After, else an exhausted budget's reset),
    read the way `transitions` reads it; None when it did not say."""
    wait = signal.retry_after_s if signal.retry_after_s is not None else signal.exhausted_for_s
    return now + wait if wait is not None else None


def cool_all(statuses: Iterable[KeyStatus], until: float, now: float) -> None:
    """Cool every key of the provider until the shared reset, as an announced cooldown: then
    selection, Retry-After, reservations and health need nothing new (failed and disabled keys
    keep their state; a longer cooldown already running is kept)."""
    for status in statuses:
        cool_down(status, now, until - now)
