"""The Redis script is a port of app/keys: random operations on both must give identical answers.

Each run drives a MemoryStateStore (the pure KeyPool) and a RedisStateStore with the same seeded
sequence of acquires, releases with every outcome and signal, rechecks, probes, admin switches
and clock steps, and compares every grant and the whole provider snapshot after every step.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from app.keys.breaker import CircuitBreaker
from app.keys.model import NO_SIGNAL, Ask, Grant, KeyStatus, Outcome, RateLimitSignal, Release
from app.keys.pacing import Pace
from app.keys.pool import KeyPool
from app.keys.renumber import follow
from app.keys.shared_limit import SharedMode
from app.keys.strategies import make_strategy
from app.state.base import KeyLayout, ProviderSnapshot
from app.state.memory import MemoryStateStore
from tests.integration.state.conftest import REDIS_HOST, REDIS_PORT, Namespace
from tests.support.servers import require_service

SIZE = 4
STEPS = 250
PACES = {
    "unpaced": Pace(),
    "rpm": Pace(rpm=120),
    "rpm_and_tpm": Pace(rpm=300, tpm=20_000),
    # Burst-tolerant pacing: several back-to-back starts after idling, then wider spacing.
    "rpm_burst": Pace(rpm=120, burst=12),
    "rpm_burst_and_tpm": Pace(rpm=600, tpm=40_000, burst=4, share=2),
}
OPERATIONS = ["acquire", "release", "recheck", "switch", "probe", "tick", "resize"]
# Every outcome occurs; successes and rate limits most, as in real traffic. UNUSED (a spare grant
# handed back) takes every other CANCELLED's turn: no extra draw, so the seeds keep their runs.
OUTCOMES: list[Outcome] = [o for o in Outcome if o is not Outcome.UNUSED]
OUTCOMES += [Outcome.OK] * 5 + [Outcome.RATE_LIMITED] * 2
WEIGHTS = [5, 4, 1, 0.4, 0.6, 2, 0.3]


@pytest.fixture(autouse=True)
def redis_is_required() -> None:
    """The key logic is written twice (Python and Lua): this test never skips, Redis or not."""
    require_service(REDIS_HOST, REDIS_PORT, "Redis (the Python/Lua parity test)", always=True)


def pools(
    strategy: str, pace: Pace, shared: SharedMode = "auto", size: int = SIZE
) -> dict[str, KeyPool]:
    breaker = CircuitBreaker(threshold=3, reset_s=5.0)
    pool = KeyPool(size, make_strategy(strategy), pace=pace, breaker=breaker, shared_limit=shared)
    return {"p": pool}


def random_ask(rng: random.Random, size: int = SIZE) -> Ask:
    avoid = {rng.randrange(size): rng.randint(1, 2) for _ in range(rng.choice([0, 0, 0, 2]))}
    return Ask(
        exclude=frozenset(rng.sample(range(size), rng.choice([0, 0, 1, 2]))),
        preferred=rng.choice([None, None, rng.randrange(size)]),
        avoid=avoid,
        tokens=rng.choice([0, 50, 400, 3_000]),
        reserve=rng.random() < 0.6,
        max_wait_s=rng.choice([0.0, 2.0, 30.0]),
        max_queue_s=rng.choice([0.0, 0.3, 1.0]),
        admit=rng.random() < 0.8,
    )


def random_signal(rng: random.Random) -> RateLimitSignal:
    return rng.choice(
        [
            NO_SIGNAL,
            NO_SIGNAL,
            RateLimitSignal(retry_after_s=rng.choice([0.5, 3.0, 20.0])),
            RateLimitSignal(remaining_requests=rng.randint(0, 3), reset_requests_s=2.5),
            RateLimitSignal(remaining_requests=rng.randint(1, 3), reset_requests_s=30.0),
            RateLimitSignal(remaining_requests=0, reset_requests_s=1.5, retry_after_s=4.0),
            # "0 left, back in a moment": a paced turn keeps its slot (Pace.request_slip)
            RateLimitSignal(remaining_requests=0, reset_requests_s=rng.choice([0.01, 0.12])),
            # Learned limits: announced limits, with or without a usable reset.
            RateLimitSignal(
                limit_requests=rng.choice([10, 100]),
                remaining_requests=rng.randint(1, 9),
                reset_requests_s=rng.choice([0.5, 6.0, 3_000.0]),
            ),
            RateLimitSignal(
                limit_requests=rng.choice([30, 60]),
                limit_tokens=rng.choice([10_000, 90_000]),
                remaining_tokens=rng.randint(0, 9_000),
                reset_tokens_s=rng.choice([None, 1.0, 20.0]),
            ),
            RateLimitSignal(limit_requests=50, remaining_requests=50, reset_requests_s=0.0),
        ]
    )


def same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(b, rel=1e-9, abs=1e-6)
    return bool(a == b)


def assert_same_grant(memory: Grant, shared: Grant, step: int) -> None:
    for field in dataclasses.fields(Grant):
        a, b = getattr(memory, field.name), getattr(shared, field.name)
        assert same_number(a, b), f"step {step}: grant.{field.name} {a!r} != {b!r}"


def assert_same_status(memory: KeyStatus, shared: KeyStatus, where: str) -> None:
    for field in dataclasses.fields(KeyStatus):
        a, b = getattr(memory, field.name), getattr(shared, field.name)
        assert same_number(a, b), f"{where}: {field.name} {a!r} != {b!r}"


def assert_same_snapshot(memory: ProviderSnapshot, shared: ProviderSnapshot, step: int) -> None:
    assert memory.circuit == shared.circuit, f"step {step}: circuit"
    until_a, until_b = memory.shared_limit_until, shared.shared_limit_until
    assert (until_a is None) == (until_b is None), f"step {step}: {until_a} {until_b}"
    assert until_a is None or same_number(until_a, until_b), f"step {step}: shared_limit_until"
    for index, (a, b) in enumerate(zip(memory.keys, shared.keys, strict=True)):
        assert_same_status(a, b, f"step {step}, key {index}")


class Twins:
    """The two stores, driven in lockstep."""

    def __init__(
        self,
        ns: Namespace,
        strategy: str,
        pace: Pace,
        seed: int,
        shared: SharedMode = "auto",
        *,
        posted: bool = False,
        size: int = SIZE,
    ) -> None:
        self.memory = MemoryStateStore(pools(strategy, pace, shared, size), rng=random.Random(0))
        self.shared = ns.store(pools(strategy, pace, shared, size))
        # `posted`: releases go to Redis as the gateway sends them, not awaited (only queued
        # ahead of the next call); their answers are checked at the next step.
        self.posted = posted
        self.answers: list[object] = []
        self.rng = random.Random(seed)
        self.now = 1_000.0
        self.held: list[int] = []
        self.seen: set[str] = set()  # which new rules the run exercised
        self.cancelled = 0
        self.fields = [str(i) for i in range(size)]  # record names, as the key vault gives them
        self.largest = size + 2
        self.added = 0

    @property
    def size(self) -> int:
        return len(self.fields)

    async def step(self, n: int) -> None:
        operation = self.rng.choices(OPERATIONS, WEIGHTS)[0]
        await getattr(self, operation)(n)
        failed = [answer for answer in self.answers if isinstance(answer, BaseException)]
        assert not failed, f"step {n}: a release failed: {failed[0]!r}"
        if self.posted and n % 3:
            return  # a posted release is then followed by the next operation itself
        a = await self.memory.snapshot("p", self.now)
        b = await self.shared.snapshot("p", self.now)
        assert_same_snapshot(a, b, n)
        if any(k.learned_requests is not None for k in a.keys):
            self.seen.add("learned")
        if a.shared_limit_until is not None:
            self.seen.add("shared")

    async def acquire(self, n: int) -> None:
        ask = random_ask(self.rng, self.size)
        a = await self.memory.acquire("p", self.now, ask)
        b = await self.shared.acquire("p", self.now, ask)
        assert_same_grant(a, b, n)
        if a.index is not None:
            self.held.append(a.index)

    async def release(self, n: int) -> None:
        if not self.held:
            return
        index = self.held.pop(self.rng.randrange(len(self.held)))
        outcome = self.rng.choice(OUTCOMES)
        if outcome is Outcome.CANCELLED:
            self.cancelled += 1
            if self.cancelled % 2:
                outcome = Outcome.UNUSED
                self.seen.add("unused")
        signal = random_signal(self.rng)
        latency = self.rng.choice([None, 0.05, 0.4, 3.0])
        done = Release("p", index, outcome, self.now, signal, latency)
        await self.memory.release(done)
        if self.posted:
            self.shared.post_release(done, self.answers.append)
        else:
            await self.shared.release(done)

    async def recheck(self, n: int) -> None:
        if self.held:
            index, tokens = self.rng.choice(self.held), self.rng.choice([0, 400])
            a = await self.memory.recheck("p", index, self.now, tokens)
            b = await self.shared.recheck("p", index, self.now, tokens)
            assert same_number(a, b), f"step {n}: recheck {a} != {b}"

    async def switch(self, n: int) -> None:
        index, disabled = self.rng.randrange(self.size), self.rng.random() < 0.3
        a = await self.memory.set_disabled("p", index, disabled)
        b = await self.shared.set_disabled("p", index, disabled)
        assert_same_status(dataclasses.replace(a, in_flight=b.in_flight), b, f"step {n}")

    async def probe(self, n: int) -> None:
        index = self.rng.randrange(self.size)
        ok, auth_failed = self.rng.random() < 0.7, self.rng.random() < 0.1
        kwargs = {"ok": ok, "auth_failed": auth_failed, "now": self.now}
        a = await self.memory.record_probe("p", index, **kwargs)  # type: ignore[arg-type]
        b = await self.shared.record_probe("p", index, **kwargs)  # type: ignore[arg-type]
        assert_same_status(a, b, f"step {n}")

    async def tick(self, n: int) -> None:
        self.now += self.rng.choice([0.05, 0.2, 0.7, 1.5, 4.0])

    async def resize(self, n: int) -> None:
        """A key deleted (later ones move down) or added at the end; in-flight attempts follow
        their key, and those of a deleted key are dropped (as `Settlement.follow` does)."""
        moved: list[int | None] = list(range(self.size))
        if self.size > 2 and self.rng.random() < 0.5:
            gone = self.rng.randrange(self.size)
            del moved[gone], self.fields[gone]
        elif self.size < self.largest:
            self.added += 1
            moved.append(None)
            self.fields.append(f"v{self.added}")
        layout = KeyLayout(tuple(moved), tuple(self.fields), (1.0,) * self.size)
        self.memory.resize("p", layout)
        self.shared.resize("p", layout)
        held = (follow(index, layout.moved_from) for index in self.held)
        self.held = [index for index in held if index is not None]


@pytest.mark.parametrize("seed", [2, 4])
@pytest.mark.parametrize("pace", list(PACES))
@pytest.mark.parametrize("strategy", ["round_robin", "least_busy"])
async def test_the_script_decides_exactly_as_the_pure_pool(
    redis_ns: Namespace, strategy: str, pace: str, seed: int
) -> None:
    twins = Twins(redis_ns, strategy, PACES[pace], seed)
    for n in range(STEPS):
        await twins.step(n)
    assert "learned" in twins.seen
    assert "unused" in twins.seen


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("pace", ["unpaced", "rpm"])
async def test_a_large_pool_read_a_few_records_at_a_time_decides_alike(
    redis_ns: Namespace, pace: str, seed: int
) -> None:
    """An acquire reads the records its choice needs one by one, and the rest in one read once
    the search gets long: the same choice as from the whole pool."""
    twins = Twins(redis_ns, "round_robin", PACES[pace], seed, size=16)
    for n in range(STEPS):
        await twins.step(n)


@pytest.mark.parametrize("shared", ["true", "false"])
async def test_forced_and_disabled_account_limits_decide_alike(
    redis_ns: Namespace, shared: SharedMode
) -> None:
    twins = Twins(redis_ns, "round_robin", PACES["unpaced"], 3, shared)
    for n in range(STEPS):
        await twins.step(n)
    assert ("shared" in twins.seen) == (shared == "true")


@pytest.mark.parametrize("seed", [2, 6])
@pytest.mark.parametrize("pace", ["rpm_and_tpm", "rpm_burst_and_tpm"])
async def test_releases_not_awaited_decide_exactly_as_awaited_ones(
    redis_ns: Namespace, pace: str, seed: int
) -> None:
    """The gateway does not wait for a release: it is queued on the instance's one connection
    ahead of whatever that instance asks next, so every later answer still sees it."""
    twins = Twins(redis_ns, "least_busy", PACES[pace], seed, posted=True)
    for n in range(STEPS):
        await twins.step(n)
    assert "learned" in twins.seen
