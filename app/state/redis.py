"""Key state shared through Redis: every store call is one script run, so one round trip.

The runs go down this process's one pipelined connection (`channel.py`) in the order they were
made, so a release can be queued without being awaited and still precede every later call.

Design (MULTI_KEY_ROTATION.md, "Where state lives"). The decisions of `app.keys` have to happen
where the state is, atomically, or two instances would both take the last slot of a budget. The
script (`lua/*.lua`) is a line-for-line port of `KeyPool.acquire` / `release` / `recheck` and of the
probe and admin transitions, and the pure Python modules stay the specification: a differential
test runs random operations on both and requires identical answers. What needs no shared state
stays in Python and reaches the script as data: outcome classification, signal parsing, the
pacing intervals, the module constants (filled into the script source) and the random draw.

Layout under the prefix (`KEYPOOL_REDIS_PREFIX`), never any key material, only indexes:
`pool:<provider>` a hash (field `meta`: cursor, breaker, pool latency; field `<index>`: one
key's record, MessagePack); `instances` a sorted set of live instance ids by last heartbeat;
`providers:cursor` the Path A rotation counter. In-flight counts are kept per instance inside
each record; an instance whose heartbeat expired stops counting, so a crashed process cannot
pin a key; a grant whose caller was cancelled is given back when it arrives, and each heartbeat
restates this instance's own counts, so an outage cannot leave a wrong count for long. Times are
the callers' unix clocks, which NTP keeps within milliseconds of each other.

Errors are not handled here: `DegradingStore` decides what an unreachable Redis means.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.keys.model import Ask, Grant, KeyStatus, Outcome, Release
from app.keys.pool import KeyPool
from app.state.base import KeyLayout, ProviderSnapshot
from app.state.channel import Callback, bulk, encode
from app.state.records import (
    SharedPool,
    ask_args,
    grant_from,
    merge_args,
    provider_spec,
    release_args,
    shared_pool_from,
    status_from,
)
from app.state.redis_scripts import INSTANCE_TTL_S, ScriptRunner, script_source

_NO_ARGS = b"{}"
_PING = encode("PING")
_OPS = {
    op: bulk(op)
    for op in ("acquire", "release", "recheck", "snapshot", "set_disabled", "probe", "merge")
}


def _ignore(answer: object) -> None:
    """An answer nobody waits for (an error shows in the next call, which fails the same way)."""


def connect(url: str, timeout_s: float) -> Redis:
    """A client that fails fast: no retries of its own, connecting bounded by `timeout_s`.

    Retrying inside the client would hold requests for seconds while Redis is gone; the store
    falls back to local state at the first error instead and reconnects in the background.
    The store bounds each call itself (`asyncio.timeout`): redis-py's own socket timeout goes
    through `asyncio.wait_for`, which on Python 3.11 swallows a cancellation arriving as the
    write completes, and costs a task per command. Not a BlockingConnectionPool: its wait costs
    ~15 us a call, and a call holds a connection for a fraction of a millisecond.
    """
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    return Redis.from_pool(pool)


def describe(url: str) -> str:
    """The URL without credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisStateStore:
    """KeyStateStore on Redis; `instance` names this process in in-flight counts and heartbeats."""

    def __init__(
        self,
        client: Redis,
        pools: Mapping[str, KeyPool],
        *,
        prefix: str = "keypool:",
        timeout_s: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.pools = dict(pools)  # configuration only: the state lives in Redis
        self._specs = {name: provider_spec(pool) for name, pool in pools.items()}
        self._keys = {name: f"{prefix}pool:{name}" for name in pools}
        self._instances = f"{prefix}instances"
        self._provider_cursor = f"{prefix}providers:cursor"
        self._incr_cursor = encode("INCR", self._provider_cursor)
        self._script = ScriptRunner(client, script_source(), timeout_s=timeout_s)
        self._rng = rng or random.Random()
        self.instance = uuid.uuid4().hex[:16]
        self._me = bulk(self.instance)
        # Each provider's script keys and its spec as RESP, encoded once (and on `resize`).
        self._calls = {name: self._call_parts(name) for name in pools}
        self._fields: dict[str, tuple[str, ...]] = {}
        self._hints: dict[str, int] = {}  # the key each provider's next acquire likely gets
        self._pruning: set[asyncio.Task[None]] = set()

    def _call_parts(self, provider: str) -> tuple[tuple[str, str], bytes]:
        return (self._keys[provider], self._instances), bulk(self._specs[provider])

    def _argv(self, op: str, spec: bytes, now: float, args: bytes) -> bytes:
        return b"".join((_OPS[op], spec, bulk(repr(now)), self._me, bulk(args)))

    def _run(
        self, op: str, provider: str, now: float, args: bytes = _NO_ARGS
    ) -> asyncio.Future[Any]:
        """The script's answer; the call is queued behind this instance's earlier ones."""
        keys, spec = self._calls[provider]
        return self._script.run(keys, self._argv(op, spec, now, args))

    async def acquire(self, provider: str, now: float, ask: Ask) -> Grant:
        """A caller cancelled while its acquire is on its way does not leave a key counted:
        when the grant arrives with nobody to take it, the key goes straight back (a release
        as `cancelled`, as a request cancelled the moment it was granted would give)."""
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()

        def answered(value: Grant | BaseException) -> None:
            if future.done():
                if isinstance(value, Grant) and value.index is not None:
                    gone = Release(provider, value.index, Outcome.CANCELLED, now)
                    self.post_release(gone, _ignore)
            elif isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)

        self.post_acquire(provider, now, ask, answered)
        return await future

    def post_acquire(
        self, provider: str, now: float, ask: Ask, callback: Callable[[Grant | BaseException], None]
    ) -> None:
        """`acquire` without waiting: the grant (or the error) goes to `callback`."""
        keys, spec = self._calls[provider]

        def answered(value: Any) -> None:
            if isinstance(value, BaseException):
                callback(value)
                return
            try:
                grant = grant_from(value)
            except (TypeError, ValueError) as exc:  # not a grant: the caller sees why
                callback(exc)
                return
            if grant.index is not None:
                # Round robin's next choice, unless another instance moves the cursor first
                # (the script then reads one record more).
                self._hints[provider] = (grant.index + 1) % max(1, len(self.pools[provider]))
            callback(grant)

        hint = self._hints.get(provider) if ask.preferred is None else ask.preferred
        argv = self._argv("acquire", spec, now, ask_args(ask, self._rng.random(), hint))
        self._script.post(keys, argv, answered)

    async def release(self, done: Release) -> None:
        await self._run("release", done.provider, done.now, release_args(done))

    def post_release(self, done: Release, callback: Callback) -> None:
        """`release` without waiting: applied in Redis before any later call of this instance
        (one connection, in order); its answer, or the error, goes to `callback`."""
        keys, spec = self._calls[done.provider]
        argv = self._argv("release", spec, done.now, release_args(done))
        self._script.post(keys, argv, callback)

    async def recheck(self, provider: str, index: int, now: float, tokens: int = 0) -> float:
        args = b'{"index": %d, "tokens": %d}' % (index, tokens)
        return float(await self._run("recheck", provider, now, args))

    async def next_provider_offset(self, count: int) -> int:
        turn = int(await self._script.channel.call(self._incr_cursor))
        return (turn - 1) % count

    def post_turn(self, callback: Callback) -> None:
        """Take the next Path A turn (1, 2, ...) without waiting; the answer goes to `callback`."""
        self._script.channel.send(self._incr_cursor, callback)

    async def claim_probe(self, provider: str, index: int, ttl_s: float) -> bool:
        """A short lock per key (SET NX PX): one instance probes it; the claim simply lapses."""
        fields = self._fields.get(provider)
        # By the key's record name (vault keys: "v<id>"), so a renumbered key keeps its claim.
        name = fields[index] if fields is not None and index < len(fields) else str(index)
        key = f"{self.prefix}probe:{provider}:{name}"
        async with asyncio.timeout(self.timeout_s):
            taken = await self.client.set(key, self.instance, nx=True, px=max(1, int(ttl_s * 1000)))
        return bool(taken)

    async def shared_pool(
        self,
        provider: str,
        now: float,
        mine: Mapping[int, int] | None = None,
        asking: int = 0,
    ) -> SharedPool:
        """The provider's state; `mine` (key index → this instance's requests in flight) first
        corrects what Redis counts for this instance, healing counts that an outage left wrong.
        `asking`: this instance's acquires still on their way (each may add one to a key)."""
        args = _NO_ARGS
        if mine is not None:
            restated = {"mine": {str(i): n for i, n in mine.items()}, "asking": asking}
            args = orjson.dumps(restated)
        return shared_pool_from(
            await self._run("snapshot", provider, now, args), self.pools[provider]
        )

    async def snapshot(self, provider: str, now: float) -> ProviderSnapshot:
        shared = await self.shared_pool(provider, now)
        return ProviderSnapshot(
            keys=shared.keys,
            circuit=shared.circuit(now),
            shared_limit_until=shared.shared_limit_until,
        )

    async def set_disabled(self, provider: str, index: int, disabled: bool) -> KeyStatus:
        args = orjson.dumps({"index": index, "disabled": disabled})
        # The transition reads no clock; `now` only dates the script's liveness checks.
        answer = await self._run("set_disabled", provider, time.time(), args)
        return status_from(orjson.loads(answer))

    async def record_probe(
        self, provider: str, index: int, *, ok: bool, auth_failed: bool, now: float
    ) -> KeyStatus:
        args = orjson.dumps({"index": index, "ok": ok, "auth_failed": auth_failed})
        return status_from(orjson.loads(await self._run("probe", provider, now, args)))

    def resize(self, provider: str, layout: KeyLayout) -> None:
        """Serve the new key list from the next call on. Records are named by `layout.fields`,
        so each key keeps its record whatever its position, on every instance whatever layout
        it is on (no renumbering in Redis, nothing for instances to agree on). The records of
        keys that left are deleted in the background."""
        pool = self.pools[provider]
        pool.resize(layout.moved_from, layout.weights)
        before = self._fields.get(provider, ())
        self._fields[provider] = layout.fields
        self._specs[provider] = provider_spec(pool, layout.fields)
        self._calls[provider] = self._call_parts(provider)
        gone = sorted(set(before) - set(layout.fields))
        if gone:
            task = asyncio.get_running_loop().create_task(self._prune(provider, gone))
            self._pruning.add(task)
            task.add_done_callback(self._pruning.discard)

    async def _prune(self, provider: str, fields: list[str]) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.hdel(self._keys[provider], *fields)
                    await pipe.execute()

    async def merge(self, provider: str, local: KeyPool, now: float) -> None:
        """Fold budgets spent and cooldowns learned while cut off into the shared record."""
        args = merge_args(local, now)
        if args is not None:
            await self._run("merge", provider, now, args)

    async def heartbeat(self, now: float) -> int:
        """Say this instance is alive; answer how many instances are (this one included)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._instances, {self.instance: now})
            pipe.zremrangebyscore(self._instances, "-inf", now - INSTANCE_TTL_S)
            pipe.zcount(self._instances, now - INSTANCE_TTL_S, "+inf")
            pipe.expire(self._instances, int(INSTANCE_TTL_S * 10))
            async with asyncio.timeout(self.timeout_s):
                answers = await pipe.execute()
        return int(answers[-2])

    async def leave(self) -> None:
        """Stop counting as alive at once (a clean shutdown), rather than after the expiry."""
        async with asyncio.timeout(self.timeout_s):
            await self.client.zrem(self._instances, self.instance)

    async def drain(self) -> None:
        """Wait until Redis has answered every call made so far (releases included)."""
        await self._script.channel.call(_PING)

    async def forget_connections(self) -> None:
        await self._script.forget()

    async def aclose(self) -> None:
        await asyncio.gather(*self._pruning, return_exceptions=True)
        await self._script.aclose()
        await self.client.aclose()
