"""SpendSink: which settled attempts are priced and booked, and what the stats writer sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from app.access.prices import PriceBook
from app.access.service import Access
from app.access.spend import SpendSink
from app.usage import UsageEvent


@dataclass
class Recorder:
    events: list[UsageEvent] = field(default_factory=list)

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


@dataclass
class FakeAccess:
    """The two methods SpendSink uses, pricing with a real PriceBook."""

    mode: str = "token"
    prices: PriceBook = field(default_factory=lambda: PriceBook.build("m=1000/2000"))
    booked: list[tuple[Any, ...]] = field(default_factory=list)

    def spend_budget(self, user_id: str) -> float:
        return 0.0 if self.mode == "none" else 5.0

    def record(self, user_id: str | None, provider: str, model: str, p: int, c: int, **kw: Any):
        self.booked.append((user_id, provider, model, p, c, kw.get("budget_usd")))
        return self.prices.cost_usd(provider, model, p, c)


def event(**changes: Any) -> UsageEvent:
    base: dict[str, Any] = {
        "provider": "alpha",
        "key_index": 0,
        "fingerprint": "alpha:0:abcd",
        "key_group": None,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "model": "m",
        "user_id": "ann",
    }
    return UsageEvent(**{**base, **changes})


def sink(access: FakeAccess) -> tuple[SpendSink, Recorder]:
    inner = Recorder()
    return SpendSink(inner, cast(Access, access)), inner


def test_an_answer_is_priced_booked_to_its_user_and_carried_to_the_key_stats():
    access = FakeAccess()
    spend, inner = sink(access)
    spend.record(event())
    assert access.booked == [("ann", "alpha", "m", 100, 50, 5.0)]
    assert inner.events[0].cost_usd == (100 * 1000 + 50 * 2000) / 1e6


def test_failed_and_token_less_attempts_pass_unpriced():
    access = FakeAccess()
    spend, inner = sink(access)
    spend.record(event(error=True, prompt_tokens=0, completion_tokens=0))
    spend.record(event(prompt_tokens=0, completion_tokens=0))
    assert access.booked == []
    assert [e.cost_usd for e in inner.events] == [0.0, 0.0]


def test_anonymous_answers_are_priced_and_none_mode_books_without_a_budget():
    access = FakeAccess(mode="none")
    spend, inner = sink(access)
    spend.record(event(user_id=None))
    spend.record(event())
    assert [b[0] for b in access.booked] == [None, "ann"]
    assert access.booked[0][5] is None
    assert access.booked[1][5] == 0.0  # none mode: spend recorded, no budget to count against
    assert all(e.cost_usd > 0 for e in inner.events)
