"""The shared key state script: its Lua parts joined, with the pure modules' constants filled in."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

from app.keys import pacing, shared_limit, stall, transitions

LUA_DIR = Path(__file__).with_name("lua")
PARTS = ("state.lua", "keys.lua", "pool.lua")

# An instance whose heartbeat is older than this is gone: its in-flight requests stop counting
# and it no longer takes a share of the budgets.
INSTANCE_TTL_S = 10.0
# How long a half-open breaker's trial may stay out before another instance may try: the trial's
# owner may have crashed (in one process the trial always ends, through `release`).
TRIAL_LEASE_S = 300.0
# A provider's record expires after a week without a write (abandoned prefixes clean themselves).
RECORD_TTL_S = 7 * 24 * 3600

_PLACEHOLDER = re.compile(r"__[A-Z_]+__")


def constants() -> dict[str, float]:
    return {
        "TRIAL_HOLD_S": transitions.TRIAL_HOLD_S,
        "DEFAULT_COOLDOWN_S": transitions.DEFAULT_COOLDOWN_S,
        "MAX_DEFAULT_COOLDOWN_S": transitions.MAX_DEFAULT_COOLDOWN_S,
        "FAIL_AFTER_ERRORS": transitions.FAIL_AFTER_ERRORS,
        "LATENCY_EWMA_WEIGHT": transitions.LATENCY_EWMA_WEIGHT,
        "MIN_HEALTH": transitions.MIN_HEALTH,
        "STALL_FLOOR_S": stall.STALL_FLOOR_S,
        "STALL_FACTOR": stall.STALL_FACTOR,
        "INSTANCE_TTL_S": INSTANCE_TTL_S,
        "TRIAL_LEASE_S": TRIAL_LEASE_S,
        "RECORD_TTL_MS": RECORD_TTL_S * 1000,
        "REQUEST_HEADROOM": pacing.REQUEST_HEADROOM,
        "UNANNOUNCED_COOLDOWN_S": shared_limit.UNANNOUNCED_COOLDOWN_S,
    }


@functools.cache
def script_source() -> str:
    text = "\n".join((LUA_DIR / part).read_text(encoding="utf-8") for part in PARTS)
    for name, value in constants().items():
        text = text.replace(f"__{name}__", repr(value))
    left = _PLACEHOLDER.search(text)
    if left:
        raise RuntimeError(f"key state script: no value for {left.group()}")
    return text


class ScriptRunner:
    """Runs the script on connections of its own, the hot path of every acquire and release.

    redis-py's pool spends ~40 us a call on locking, health polling and bookkeeping around a
    ~80 us round trip; here a call takes an idle connection, sends EVALSHA and reads the answer.
    A connection that saw any error (or a cancellation, which may leave an answer unread) is
    closed with every idle one: an error usually means the server went away, and connections to
    a server that restarted must not be reused.
    """

    def __init__(self, client: Redis, source: str, *, max_idle: int = 32) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.max_idle = max_idle
        self._idle: list[AbstractConnection] = []
        self._closing: set[asyncio.Future[None]] = set()

    async def __call__(self, keys: tuple[str, ...], argv: tuple[str | bytes, ...]) -> bytes:
        conn = self._take()
        try:
            try:
                answer = await self._evalsha(conn, keys, argv)
            except NoScriptError:  # a restarted or flushed server: load it and go again
                await self.client.script_load(self.source)
                answer = await self._evalsha(conn, keys, argv)
        except BaseException:
            await self._discard(conn, *self._idle)
            self._idle.clear()
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            await self._discard(conn)
        return answer

    def _take(self) -> AbstractConnection:
        """An idle connection the server has not closed meanwhile (a restart), else a new one."""
        while self._idle:
            conn = self._idle.pop()
            reader = getattr(conn, "_reader", None)
            if reader is not None and not reader.at_eof():
                return conn
            closing = asyncio.ensure_future(conn.disconnect(nowait=True))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return self._connection()

    def _connection(self) -> AbstractConnection:
        """A connection with the pool's settings, not tracked by the pool (this runner owns it)."""
        pool = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    async def _evalsha(
        self, conn: AbstractConnection, keys: tuple[str, ...], argv: tuple[str | bytes, ...]
    ) -> bytes:
        await conn.send_command("EVALSHA", self.sha, len(keys), *keys, *argv)
        answer: bytes = await conn.read_response()
        return answer

    @staticmethod
    async def _discard(*connections: AbstractConnection) -> None:
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def forget(self) -> None:
        """Close the idle connections (after an outage: they lead to the server that went away)."""
        await self._discard(*self._idle)
        self._idle.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._closing.clear()

    async def aclose(self) -> None:
        await self.forget()
