"""Spare grants' bookkeeping: when a grant asked ahead may still be handed out, and when not."""

from __future__ import annotations

from app.keys.model import Ask, Grant, Outcome, RateLimitSignal, Release
from app.state.spares import Spare, SpareGrants, keepable, news, plain, teaches_limits

T0 = 1_000.0


def held(spares: SpareGrants, **kwargs: object) -> Spare:
    spare = Spare(**{"index": 2, "preferred": None, "asked_at": T0, "generation": 0, "news": 0,
                     **kwargs})  # type: ignore[arg-type]  # fmt: skip
    spares.held["p"] = spare
    return spare


class TestTake:
    def test_a_fresh_spare_goes_to_the_next_first_attempt(self):
        spares = SpareGrants(ttl_s=0.1)
        held(spares)
        assert spares.take("p", Ask(), 0, T0 + 0.05) == (2, None)
        assert spares.take("p", Ask(), 0, T0 + 0.05) == (None, None)  # once

    def test_an_old_spare_is_given_back(self):
        spares = SpareGrants(ttl_s=0.1)
        spare = held(spares)
        assert spares.take("p", Ask(), 0, T0 + 0.2) == (None, spare)

    def test_a_spare_for_another_preferred_key_or_layout_is_given_back(self):
        spares = SpareGrants(ttl_s=0.1)
        spare = held(spares, preferred=1)
        assert spares.take("p", Ask(), 0, T0) == (None, spare)
        spare = held(spares)
        assert spares.take("p", Ask(), 1, T0) == (None, spare)  # the key list changed

    def test_news_of_the_provider_makes_every_earlier_spare_stale(self):
        spares = SpareGrants(ttl_s=0.1)
        spare = held(spares)
        assert spares.hear("p") == [("p", spare)]
        late = Spare(3, None, T0, 0, news=0)  # asked before the news, answered after it
        assert not spares.current("p", late)
        assert spares.current("p", Spare(3, None, T0, 0, news=1))

    def test_expired_takes_only_the_old_ones(self):
        spares = SpareGrants(ttl_s=0.1)
        spare = held(spares)
        assert spares.expired(T0 + 0.09) == []
        assert spares.expired(T0 + 0.11) == [("p", spare)]
        assert spares.held == {}


class TestWhichRequests:
    def test_only_plain_first_attempts_on_unpaced_providers(self):
        spares = SpareGrants()
        assert spares.wanted("p", Ask(preferred=1, tokens=500), configured_pace=False)
        assert not spares.wanted("p", Ask(), configured_pace=True)
        assert not plain(Ask(exclude=frozenset({0})))  # a fallback attempt
        assert not plain(Ask(avoid={0: 1}))  # a batch spreading over keys
        assert not plain(Ask(admit=False))  # not the request's first attempt
        spares.paced.add("p")  # its keys learned limits
        assert not spares.wanted("p", Ask(), configured_pace=False)
        assert not SpareGrants(ttl_s=0).wanted("p", Ask(), configured_pace=False)

    def test_only_a_key_free_now_is_kept(self):
        assert keepable(Grant(1))
        assert not keepable(Grant(1, delay_s=0.2))  # a reserved turn
        assert not keepable(Grant(1, after_cooldown=True))
        assert not keepable(Grant(None, refused="rate_limited"))


class TestNews:
    def test_failures_and_empty_keys_are_news(self):
        assert news(Release("p", 0, Outcome.RATE_LIMITED, T0))
        assert news(Release("p", 0, Outcome.SERVER_ERROR, T0))
        empty = RateLimitSignal(remaining_requests=0, reset_requests_s=2.0)
        assert news(Release("p", 0, Outcome.OK, T0, empty))
        assert not news(Release("p", 0, Outcome.OK, T0))

    def test_an_unlimited_budget_teaches_nothing_a_real_one_does(self):
        # The demo's fake announces a million requests with no reset on every answer.
        unlimited = RateLimitSignal(
            remaining_requests=999_999,
            reset_requests_s=0.0,
            limit_requests=1_000_000,
            limit_tokens=10_000_000,
            remaining_tokens=10_000_000,
            reset_tokens_s=0.0,
        )
        assert not teaches_limits(unlimited)
        assert not news(Release("p", 0, Outcome.OK, T0, unlimited))
        openai = RateLimitSignal(remaining_requests=499, reset_requests_s=0.12, limit_requests=500)
        assert teaches_limits(openai)
        assert news(Release("p", 0, Outcome.OK, T0, openai))
