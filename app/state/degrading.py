"""Shared key state that survives Redis going away: this process's own pools stand in meanwhile.

While Redis answers, every call goes to `RedisStateStore` (one round trip), and a heartbeat task
says this instance is alive, counts the live instances (N), restates its own in-flight counts
and copies the shared state into the local pools once a second, so they are warm when needed.
The first failed call switches to the local pools at once (that request included: no client
sees an error), logs one warning, and the heartbeat task reconnects with backoff. Meanwhile each
instance keeps to 1/N of every key's budget, N as last seen, so losing Redis never multiplies
what a key receives. On reconnection the budgets spent and cooldowns learned alone, and admin
switches made meanwhile, are folded into the shared record.

A release is not awaited: the answer it follows is already complete, and the release reaches
Redis ahead of anything this instance asks later (`channel.py`: one connection, in order), so
no request waits for the bookkeeping of another, and none sees state without it. An acquire is
awaited, except that a first attempt on an unpaced provider usually finds its grant already
made (`ahead.py`, `spares.py`: one grant asked ahead per provider, kept at most 0.1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from redis.exceptions import RedisError

from app.keys.learned import has_learned
from app.keys.model import Ask, Grant, KeyStatus, Outcome, Release
from app.keys.pacing import Pace
from app.keys.renumber import Renumbering
from app.state.ahead import Ahead
from app.state.base import KeyLayout, ProviderSnapshot
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore
from app.state.spares import SPARE_TTL_S

T = TypeVar("T")
logger = logging.getLogger("keypool.state")

# Everything an unreachable, restarting or overloaded Redis raises through redis-py.
REDIS_ERRORS = (RedisError, OSError)
HEARTBEAT_S = 1.0  # the issue asks for at least every 2 s; a second also bounds mirror staleness


class _Unavailable(Exception):
    """Redis cannot serve this call; local state does."""


class DegradingStore:
    """KeyStateStore on Redis with in-process fallback (DESIGN.md §5)."""

    def __init__(
        self,
        shared: RedisStateStore,
        local: MemoryStateStore,
        *,
        address: str,
        peers: int = 1,
        heartbeat_s: float = HEARTBEAT_S,
        reconnect_s: tuple[float, float] = (0.1, 5.0),
        clock: Callable[[], float] = time.time,
        spare_ttl_s: float = SPARE_TTL_S,
    ) -> None:
        self.shared = shared
        self.local = local
        self.address = address
        self.heartbeat_s = heartbeat_s
        self.reconnect_s = reconnect_s
        self.clock = clock
        self.peers = 1
        self.failed_reconnects = 0
        self._budgets: Mapping[str, Pace] = {n: p.pace for n, p in local.pools.items()}
        self._share(peers)
        self._up = self._warned = self._started = self._closing = False
        self._granted: Counter[tuple[str, int]] = Counter()  # Redis grants not yet released
        self._asking: Counter[str] = Counter()  # acquires on their way to Redis, per provider
        self._switches: dict[tuple[str, int], bool] = {}  # admin switches made while cut off
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._layouts = Renumbering()
        self.ahead = Ahead(shared, _Books(self), spare_ttl_s, clock, REDIS_ERRORS)

    def redis_status(self) -> str:
        return "ok" if self._up else "down"

    async def start(self) -> None:
        """One connection attempt now (bounded by the client's timeout), then the heartbeat."""
        if not self._started:
            self._started = True
            await self._reconnect()
            self._task = asyncio.create_task(self._supervise(), name="keypool-redis")

    # KeyStateStore ---------------------------------------------------------------------------

    async def acquire(self, provider: str, now: float, ask: Ask) -> Grant:
        ahead = self.ahead.wanted(provider, ask, self._budgets[provider].paced)
        if ahead:
            index = await self.ahead.take(provider, ask)
            if index is not None:
                return Grant(index)
        grant = await self._acquire(provider, now, ask)
        if ahead and grant.index is not None:
            self.ahead.ask(provider, ask)
        return grant

    async def _acquire(self, provider: str, now: float, ask: Ask) -> Grant:
        generation = self._layouts.generation(provider)
        self._asking[provider] += 1
        asked = self.clock()
        try:
            grant = await self._call(lambda s: s.acquire(provider, now, ask))
        except _Unavailable:
            return await self.local.acquire(provider, now, ask)
        finally:
            self._asking[provider] -= 1
        # The grant's index is in the layout of the call (the caller follows it from there);
        # this store's own books are in the current one (a key list may change meanwhile).
        index = None if grant.index is None else self._follow(provider, grant.index, generation)
        if index is not None:
            self._granted[provider, index] += 1
            # The local pool follows this instance's own grants, so that an outage does not
            # start from a second-old picture of them.
            self.local.pools[provider].mirror_grant(
                index, ask.tokens, now + grant.delay_s, self._budgets[provider]
            )
        if grant.delay_s > 0:
            # A reserved turn is `delay_s` after `now`; the round trip has used part of that,
            # and a caller sleeping the whole of it would go late by a varying amount.
            late = max(0.0, self.clock() - asked)
            grant = dataclasses.replace(grant, delay_s=max(0.0, grant.delay_s - late))
        return grant

    async def release(self, done: Release) -> None:
        """To the store that granted the attempt; a Redis grant ends locally if Redis is gone.

        Not awaited: the release goes down this instance's one connection ahead of every later
        call, so the request's next acquire (its fallback) already sees a failed key, and a 429
        that cools the whole provider, without waiting a round trip for it.
        """
        self.ahead.heard(done)
        granted = (done.provider, done.index)
        if self._granted[granted] > 0:
            self._granted[granted] -= 1
            if self._up:
                self.shared.post_release(done, functools.partial(self._released, done))
                return
        self.local.apply_release(done)

    def _released(self, done: Release, answer: object) -> None:
        if isinstance(answer, BaseException):
            self._lost(answer)
            self.local.apply_release(done)
        else:
            self.local.pools[done.provider].mirror_release(done.index)

    async def recheck(self, provider: str, index: int, now: float, tokens: int = 0) -> float:
        if self._granted[provider, index] > 0:
            with contextlib.suppress(_Unavailable):
                return await self._call(lambda s: s.recheck(provider, index, now, tokens))
        return await self.local.recheck(provider, index, now, tokens)

    async def claim_probe(self, provider: str, index: int, ttl_s: float) -> bool:
        """Through Redis while it is up; cut off, every instance probes for itself."""
        try:
            return await self._call(lambda s: s.claim_probe(provider, index, ttl_s))
        except _Unavailable:
            return True

    async def next_provider_offset(self, count: int) -> int:
        turn = await self.ahead.turn()
        if turn is not None:
            return (turn - 1) % count
        with contextlib.suppress(_Unavailable):
            offset = await self._call(lambda s: s.next_provider_offset(count))
            self.ahead.ask_turn()
            return offset
        return await self.local.next_provider_offset(count)

    async def snapshot(self, provider: str, now: float) -> ProviderSnapshot:
        with contextlib.suppress(_Unavailable):
            return await self._call(lambda s: s.snapshot(provider, now))
        return await self.local.snapshot(provider, now)

    async def set_disabled(self, provider: str, index: int, disabled: bool) -> KeyStatus:
        self.ahead.switched(provider)  # its spare may be of the key switched off
        try:
            status = await self._call(lambda s: s.set_disabled(provider, index, disabled))
        except _Unavailable:
            self._switches[provider, index] = disabled
            return await self.local.set_disabled(provider, index, disabled)
        await self.local.set_disabled(provider, index, disabled)
        return status

    async def record_probe(
        self, provider: str, index: int, *, ok: bool, auth_failed: bool, now: float
    ) -> KeyStatus:
        with contextlib.suppress(_Unavailable):
            return await self._call(
                lambda s: s.record_probe(provider, index, ok=ok, auth_failed=auth_failed, now=now)
            )
        return await self.local.record_probe(
            provider, index, ok=ok, auth_failed=auth_failed, now=now
        )

    def resize(self, provider: str, layout: KeyLayout) -> None:
        """Both stores take the new key list; this store's books of grants and admin switches
        follow their keys (a grant of a key that left is forgotten with it)."""
        self.ahead.drop(provider)  # in the layout it was granted in
        self.shared.resize(provider, layout)
        self.local.resize(provider, layout)
        generation = self._layouts.generation(provider)
        self._layouts.record(provider, layout.moved_from)
        granted: Counter[tuple[str, int]] = Counter()
        for (name, index), count in self._granted.items():
            moved = index if name != provider else self._follow(name, index, generation)
            if moved is not None and count > 0:
                granted[name, moved] += count
        self._granted = granted
        switches: dict[tuple[str, int], bool] = {}
        for (name, index), disabled in self._switches.items():
            moved = index if name != provider else self._follow(name, index, generation)
            if moved is not None:
                switches[name, moved] = disabled
        self._switches = switches

    def _follow(self, provider: str, index: int, generation: int) -> int | None:
        return self._layouts.translate(provider, index, generation)

    async def aclose(self) -> None:
        # The flag as well as the cancellation: redis-py may swallow a CancelledError that
        # arrives while it connects, and the loop must end all the same.
        self._closing = True
        self.ahead.drop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._up:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.shared.drain()  # the releases still on their way
                await self.shared.leave()
        self._up = False
        await self.shared.aclose()

    # Routing ---------------------------------------------------------------------------------

    async def _call(self, call: Callable[[RedisStateStore], Awaitable[T]]) -> T:
        """Run `call` on Redis, or raise _Unavailable (and switch to local state).

        A call cut off by a cancelled request may still have run in Redis; the next heartbeat
        restates this instance's in-flight counts, so nothing stays counted for long.
        """
        if not self._started:
            self._started = True  # used without `start()` (a script's ChatService)
            self._task = asyncio.get_running_loop().create_task(self._supervise())
        if not self._up:
            raise _Unavailable
        try:
            return await call(self.shared)
        except REDIS_ERRORS as exc:
            self._lost(exc)
            raise _Unavailable from exc

    # Connection ------------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if not self._up:
            return
        self._up = False
        self.ahead.drop()
        self._warn(exc, "lost")
        self._wake.set()

    def _warn(self, exc: BaseException, what: str) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "redis %s %s (%s): serving from in-process key state, keeping to 1/%d of every "
            "key's budget; reconnecting in the background",
            self.address,
            what,
            type(exc).__name__,
            self.peers,
        )

    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            try:
                failures = await self._tick(failures)
            except Exception:  # a bug must not end the heartbeat: others would count us gone
                logger.exception("redis heartbeat failed")
                await asyncio.sleep(self.heartbeat_s)

    async def _tick(self, failures: int) -> int:
        """One heartbeat while connected, or one reconnection attempt; the failures in a row."""
        if self._up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            self._wake.clear()
            if self._up:
                await self._beat()
            return 0
        await asyncio.sleep(self._backoff(failures))
        return 0 if await self._reconnect() else failures + 1

    def _backoff(self, failures: int) -> float:
        base, cap = self.reconnect_s
        ceiling = min(cap, base * 2.0 ** min(failures, 16))
        return ceiling * (0.5 + self._rng.random() / 2)

    async def _beat(self) -> None:
        now = self.clock()
        try:
            self._share(await self.shared.heartbeat(now))
            for name, pool in self.local.pools.items():
                mine = {i: n for (p, i), n in self._granted.items() if p == name and n > 0}
                generation = self._layouts.generation(name)
                # Acquires on their way are counted in Redis before their answers reach
                # `_granted`: they widen what the restatement accepts.
                shared = await self.shared.shared_pool(name, now, mine, self._asking[name])
                if generation != self._layouts.generation(name):
                    continue  # the key list changed meanwhile: the next beat copies it
                pool.load_shared(shared.keys, shared.breaker, shared.cursor, shared.latency_ewma)
                if any(has_learned(s) for s in shared.keys):
                    self.ahead.learned(name)
        except REDIS_ERRORS as exc:
            self._lost(exc)

    async def _reconnect(self) -> bool:
        now = self.clock()
        try:
            await self.shared.forget_connections()
            peers = await self.shared.heartbeat(now)
            for (provider, index), disabled in list(self._switches.items()):
                await self.shared.set_disabled(provider, index, disabled)
                del self._switches[provider, index]
            for name, pool in self.local.pools.items():
                await self.shared.merge(name, pool, now)
        except REDIS_ERRORS as exc:
            self.failed_reconnects += 1
            self._warn(exc, "unreachable")
            return False
        self._share(peers)
        self._up = True
        if self._warned:
            logger.info("redis %s reachable again: shared key state resumed", self.address)
        self._warned = False
        self._wake.set()  # a heartbeat at once restates this instance's in-flight counts
        return True

    def _share(self, peers: int) -> None:
        """Pace the local pools to this instance's share, ready for the next outage."""
        self.peers = max(1, peers)
        for name, pool in self.local.pools.items():
            pool.pace = self._budgets[name].shared_by(self.peers)


class _Books:
    """What `Ahead` may see and do of a degrading store's books (ahead.Books)."""

    def __init__(self, store: DegradingStore) -> None:
        self.store = store

    def usable(self) -> bool:
        return self.store._up and not self.store._closing

    def generation(self, provider: str) -> int:
        return self.store._layouts.generation(provider)

    def follow(self, provider: str, index: int, generation: int) -> int | None:
        return self.store._follow(provider, index, generation)

    def asking(self, provider: str, delta: int) -> None:
        self.store._asking[provider] += delta

    def granted(self, provider: str, index: int, at: float) -> None:
        store = self.store
        store._granted[provider, index] += 1
        store.local.pools[provider].mirror_grant(index, 0, at, store._budgets[provider])

    def give_back(self, provider: str, index: int) -> None:
        """Unlike `release`: no request was sent, so nothing is news, and cut off from Redis only
        the local mirror of the grant ends (its request count was never mirrored)."""
        store = self.store
        if store._granted[provider, index] <= 0:
            return
        store._granted[provider, index] -= 1
        done = Release(provider, index, Outcome.UNUSED, store.clock())
        if store._up:
            store.shared.post_release(done, functools.partial(store._released, done))
        else:
            store.local.pools[provider].mirror_release(index)

    def lost(self, exc: BaseException) -> None:
        self.store._lost(exc)
