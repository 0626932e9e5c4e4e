"""FallbackRunner with scripted attempts, the in-process store, a fake clock and a fake sleep."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from typing import Any, cast

import pytest

from app.chat.clients import ClientCache
from app.chat.fallback import FallbackRunner, KeySpread, request_tokens
from app.chat.routing import Route
from app.chat.settlement import Settlement
from app.config import ApiKey, ProviderConfig, fingerprint
from app.errors import AllKeysFailed, AllProvidersFailed, RateLimited, UpstreamBadRequest
from app.keys.backoff import WaitPolicy
from app.keys.breaker import CircuitBreaker
from app.keys.model import KeyState, Outcome, RateLimitSignal, Release
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.providers import errors as upstream
from app.providers.client import ProviderClient
from app.providers.transport import Transport
from app.state.memory import MemoryStateStore

T0 = 1_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Naps:
    """The injected sleep: records each nap and (optionally) moves the fake clock on."""

    def __init__(self, clock: Clock, *, advance: bool = True) -> None:
        self.clock, self.advance, self.naps = clock, advance, list[float]()

    async def __call__(self, seconds: float) -> None:
        self.naps.append(seconds)
        if self.advance:
            self.clock.now += seconds
        await asyncio.sleep(0)


def provider(name: str, keys: int) -> ProviderConfig:
    secrets = [f"{name}-secret-key-number-{i}" for i in range(keys)]
    return ProviderConfig(
        name=name,
        base_url=f"http://{name}.invalid/v1",
        default_model="m",
        keys=tuple(ApiKey(s, fingerprint(name, i, s)) for i, s in enumerate(secrets)),
    )


class Harness:
    def __init__(
        self,
        providers: list[ProviderConfig],
        *,
        pace: Pace | None = None,
        policy: WaitPolicy | None = None,
        advance: bool = True,
        threshold: int = 5,
    ) -> None:
        self.providers = providers
        self.clock = Clock()
        self.sleep = Naps(self.clock, advance=advance)
        pools = {
            p.name: KeyPool(
                len(p.keys),
                RoundRobin(),
                pace=pace,
                breaker=CircuitBreaker(threshold, 60),
                shared_limit=p.shared_limit,
            )
            for p in providers
        }
        self.store = MemoryStateStore(pools, rng=random.Random(0))
        self.runner = FallbackRunner(
            self.store,
            ClientCache(providers, cast(Transport, object())),
            Settlement(self.store, clock=self.clock),
            self.clock,
            rotate_providers=False,
            groups=3,
            policy=policy or WaitPolicy(),
            sleep=self.sleep,
            rng=random.Random(0),
        )
        self.calls: list[tuple[str, int]] = []

    def route(self, path: str = "B") -> Route:
        return Route(path, tuple(self.providers), "m" if path == "B" else None)  # type: ignore[arg-type]

    def script(self, fail: dict[tuple[str, int], Exception]) -> Callable[[ProviderClient], Any]:
        async def attempt(client: ProviderClient) -> tuple[str, int]:
            key = (client.provider.name, client.key_index)
            self.calls.append(key)
            if key in fail:
                raise fail[key]
            return key

        return attempt

    async def run(
        self, fail: dict[tuple[str, int], Exception] | None = None, path: str = "B", **kw: Any
    ) -> tuple[str, int]:
        success = await self.runner.run(self.route(path), self.script(fail or {}), **kw)
        await success.lease.finish(Outcome.OK)
        return cast(tuple[str, int], success.value)

    async def cool(self, name: str, seconds: float) -> None:
        """Every key of `name` answers one 429 announcing `seconds`."""
        pool = self.store.pools[name]
        for index in range(len(pool)):
            pool.statuses[index].in_flight += 1
            await self.store.release(
                Release(name, index, Outcome.RATE_LIMITED, self.clock(), RateLimitSignal(seconds))
            )


def limited(seconds: float | None = None) -> upstream.UpstreamRateLimited:
    return upstream.UpstreamRateLimited(
        "upstream 429", status=429, signal=RateLimitSignal(retry_after_s=seconds)
    )


def server_error() -> upstream.UpstreamServerError:
    return upstream.UpstreamServerError("upstream 500", status=500)


class TestMovingOn:
    async def test_the_next_key_is_tried_at_once(self):
        h = Harness([provider("alpha", 3)])
        success = await h.runner.run(h.route(), h.script({("alpha", 0): server_error()}))
        assert success.value == ("alpha", 1)
        assert [a.as_dict() for a in success.attempts] == [
            {"provider": "alpha", "key_index": 0, "error": "server_error", "status": 500}
        ]
        assert h.sleep.naps == []

    async def test_a_rejected_request_is_not_retried(self):
        h = Harness([provider("alpha", 3)])
        bad = upstream.UpstreamRejected("upstream 400", status=400)
        with pytest.raises(UpstreamBadRequest):
            await h.run({("alpha", 0): bad})
        assert h.calls == [("alpha", 0)]

    async def test_fallback_false_makes_one_attempt(self):
        h = Harness([provider("alpha", 3)])
        with pytest.raises(AllKeysFailed) as caught:
            await h.run({("alpha", 0): server_error()}, fallback=False)
        assert caught.value.details["errors"] == {"0": "server_error"}
        assert h.calls == [("alpha", 0)]

    async def test_path_a_moves_to_the_next_provider(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        assert await h.run({("alpha", 0): server_error()}, path="A") == ("beta", 0)


class TestWaitingForCooldowns:
    async def test_a_cooling_pool_is_waited_for_within_the_deadline(self):
        h = Harness([provider("alpha", 2)])
        await h.cool("alpha", 2.0)
        assert await h.run() == ("alpha", 0)
        (nap,) = h.sleep.naps
        assert 2.0 <= nap <= 2.0 + WaitPolicy().jitter_base_s

    async def test_beyond_the_deadline_it_is_429_at_once_with_retry_after(self):
        h = Harness([provider("alpha", 2)], policy=WaitPolicy(deadline_s=30))
        await h.cool("alpha", 40.0)
        with pytest.raises(RateLimited) as caught:
            await h.run()
        assert caught.value.headers["Retry-After"] == "40"
        assert h.sleep.naps == []
        assert h.calls == []

    async def test_keys_this_request_saw_rate_limited_are_not_waited_for(self):
        h = Harness([dataclasses.replace(provider("alpha", 2), shared_limit="false")])
        with pytest.raises(RateLimited) as caught:
            await h.run({("alpha", 0): limited(2.5), ("alpha", 1): limited(4.0)})
        assert caught.value.headers["Retry-After"] == "3"
        assert h.sleep.naps == []

    async def test_two_keys_limited_together_answer_the_account_reset(self):
        """Auto-detected account limit: Retry-After is the later reset, for this request and the
        next one, which makes no attempt at all (the reset is beyond the deadline)."""
        h = Harness([provider("alpha", 3)], policy=WaitPolicy(deadline_s=3))
        # key 1's last answer left it 5 requests of its own: its 429 can only be the account's
        key1 = h.store.pools["alpha"].statuses[1]
        key1.budget_left, key1.budget_reset_at = 5, h.clock() + 30
        with pytest.raises(RateLimited) as caught:
            await h.run({("alpha", 0): limited(2.5), ("alpha", 1): limited(4.0)})
        assert caught.value.headers["Retry-After"] == "4"
        assert len(h.calls) == 2
        with pytest.raises(RateLimited) as again:
            await h.run()
        assert again.value.headers["Retry-After"] == "4"
        assert len(h.calls) == 2

    async def test_every_request_waits_in_line_while_its_deadline_can_be_met(self):
        """One turn after each cooldown is reserved; the others wait in line (not 429)."""
        h = Harness([provider("alpha", 2)], advance=False)
        await h.cool("alpha", 1.0)
        results = await asyncio.gather(*(h.run() for _ in range(4)), return_exceptions=True)
        assert all(isinstance(r, tuple) and r[0] == "alpha" for r in results), results

    async def test_path_a_waits_for_the_provider_that_comes_back_first(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        await h.cool("alpha", 5.0)
        await h.cool("beta", 2.0)
        assert await h.run(path="A") == ("beta", 0)
        assert h.sleep.naps[0] == pytest.approx(2.0, abs=0.06)

    async def test_a_client_gone_while_waiting_gives_the_turn_back(self):
        h = Harness([provider("alpha", 1)])
        await h.cool("alpha", 2.0)

        async def never_wakes(seconds: float) -> None:
            await asyncio.Event().wait()

        h.runner.sleep = never_wakes
        task = asyncio.create_task(h.run())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = h.store.pools["alpha"].statuses[0]
        assert (status.in_flight, status.trial_until) == (0, None)


class TestPacing:
    async def test_excess_over_the_queue_bound_is_429_at_once(self):
        pace = Pace(rpm=600)  # one start per ~0.1 s per key
        # a deadline as short as the queue bound: the excess cannot wait in line either
        policy = WaitPolicy(queue_s=0.25, deadline_s=0.25)
        h = Harness([provider("alpha", 1)], pace=pace, policy=policy)
        h.sleep.advance = False
        results = await asyncio.gather(*(h.run() for _ in range(5)), return_exceptions=True)
        served = [r for r in results if isinstance(r, tuple)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert (len(served), len(refused)) == (3, 2)
        gap = 0.1 * (1 + REQUEST_HEADROOM)
        assert h.sleep.naps == pytest.approx([gap, 2 * gap])
        assert all(r.headers["Retry-After"] == "1" for r in refused)

    async def test_while_a_queue_stands_nobody_books_far_ahead_outside_the_line(self):
        alpha = dataclasses.replace(provider("alpha", 1), rpm_per_key=600)
        h = Harness([alpha], pace=Pace(rpm=600))
        gate = h.runner.lines.gate("alpha")
        standing = gate.standing
        assert standing is not None
        for step in range(30):  # turns that waited 1.2 s for 0.3 s, demand still arriving
            standing.admit(1.2, h.clock.now + step * 0.01)
            standing.observe(1.2, h.clock.now + step * 0.01)
        h.clock.now += 0.29
        entered: list[str | None] = []
        enter = gate.enter

        def spy(user: str | None, *args: Any) -> Any:
            entered.append(user)
            return enter(user, *args)

        gate.enter = spy  # type: ignore[method-assign,assignment]
        assert await h.run(user_id="u") == ("alpha", 0)  # the free key, at once
        assert entered == []
        assert await h.run(user_id="u") == ("alpha", 0)  # 0.1 s ahead: through the line
        assert entered == ["u"]

    def test_a_request_costs_its_prompt_and_its_completion_cap(self):
        params = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
        assert request_tokens(params) == 150


class TestBatchSpread:
    async def test_siblings_land_on_different_keys_even_with_one_preferred_key(self):
        h = Harness([provider("alpha", 3)])
        spread = KeySpread()
        keys = await asyncio.gather(*(h.run(group=1, spread=spread) for _ in range(3)))
        assert sorted(k[1] for k in keys) == [0, 1, 2]

    async def test_with_fewer_keys_they_rotate(self):
        h = Harness([provider("alpha", 2)])
        spread = KeySpread()
        keys = await asyncio.gather(*(h.run(group=1, spread=spread) for _ in range(4)))
        assert sorted(k[1] for k in keys) == [0, 0, 1, 1]


class TestCircuit:
    async def test_an_open_circuit_is_skipped_without_asking_upstream(self):
        h = Harness([provider("alpha", 2), provider("beta", 1)], threshold=2)
        down: dict[tuple[str, int], Exception] = {
            ("alpha", 0): server_error(),
            ("alpha", 1): server_error(),
        }
        assert await h.run(down, path="A") == ("beta", 0)
        h.calls.clear()
        assert await h.run(down, path="A") == ("beta", 0)
        assert h.calls == [("beta", 0)]

    async def test_a_pool_with_no_usable_key_is_503(self):
        h = Harness([provider("alpha", 1), provider("beta", 1)])
        for name in ("alpha", "beta"):
            await h.store.set_disabled(name, 0, True)
        with pytest.raises(AllProvidersFailed) as caught:
            await h.run(path="A")
        assert caught.value.details["errors"] == {"alpha": "no_usable_key", "beta": "no_usable_key"}
        assert h.store.pools["alpha"].statuses[0].state is KeyState.DISABLED
