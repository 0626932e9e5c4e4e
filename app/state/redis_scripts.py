"""The shared key state script: its Lua parts joined, with the pure modules' constants filled in."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from app.keys import pacing, shared_limit, stall, transitions
from app.state.channel import Callback, Channel, bulk, encode, open_socket, resolver

LUA_DIR = Path(__file__).with_name("lua")
PARTS = ("state.lua", "keys.lua", "pool.lua")

# An instance whose heartbeat is older than this is gone: its in-flight requests stop counting
# and it no longer takes a share of the budgets.
INSTANCE_TTL_S = 10.0
# How long a half-open breaker's trial may stay out before another instance may try: the trial's
# owner may have crashed (in one process the trial always ends, through `release`).
TRIAL_LEASE_S = 300.0
# A provider's record expires a week after it was created or an instance last heartbeat
# (abandoned prefixes clean themselves).
RECORD_TTL_S = 7 * 24 * 3600

_PLACEHOLDER = re.compile(r"__[A-Z_]+__")
# The script's arguments: op, provider spec, now, instance id, op arguments (state.lua).
ARGV_COUNT = 5
# A call the server answered "no such script" goes again after a load (twice: a server
# without functions first says so, then that it lacks the plain script too).
_ATTEMPTS = 3


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
    """The library: every part, then `run(keys, argv)` as its one entry point."""
    text = "\n".join((LUA_DIR / part).read_text(encoding="utf-8") for part in PARTS)
    for name, value in constants().items():
        text = text.replace(f"__{name}__", repr(value))
    left = _PLACEHOLDER.search(text)
    if left:
        raise RuntimeError(f"key state script: no value for {left.group()}")
    return text


class ScriptRunner:
    """Runs the script over the process's one pipelined connection (`channel.Channel`).

    On Redis 7 and later the script is a function library, loaded once per server: a call runs
    only the operation asked for. As a plain script (EVALSHA, Redis 6) every call would first
    run the whole file, defining every function again, which costs Redis more than the
    operation itself. Both are the same source (`script_source`), named by its hash, so
    instances running different versions never call each other's code.

    A server that does not know the script (restarted, flushed) answers the calls already on
    their way with an error; each such call is sent again behind one load, in its original
    order, so no caller sees the error and no release overtakes an acquire.
    """

    def __init__(self, client: Redis, body: str, *, timeout_s: float) -> None:
        self.channel = Channel(functools.partial(open_socket, client), timeout_s=timeout_s)
        tag = hashlib.sha1(body.encode()).hexdigest()[:16]
        self.name = f"keypool_{tag}"
        self.eval_source = f"{body}\nreturn run(KEYS, ARGV)\n"
        self.sha = hashlib.sha1(self.eval_source.encode()).hexdigest()
        self.function_source = (
            f"#!lua name={self.name}\n{body}\nredis.register_function('{self.name}', run)\n"
        )
        self.functions = True  # until the server says it has no FCALL
        self._loading = False
        self._heads: dict[tuple[bool, tuple[str, ...]], bytes] = {}

    def run(self, keys: tuple[str, ...], argv: bytes) -> asyncio.Future[Any]:
        """`argv`: the script's ARGV_COUNT arguments, each already a RESP bulk string."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(keys, argv, resolver(future), _ATTEMPTS)
        return future

    def post(self, keys: tuple[str, ...], argv: bytes, callback: Callback) -> None:
        """As `run`, the answer (or error) going to `callback`: nothing to await."""
        self._send(keys, argv, callback, _ATTEMPTS)

    def _send(self, keys: tuple[str, ...], argv: bytes, callback: Callback, attempts: int) -> None:
        functions = self.functions

        def answered(value: Any) -> None:
            if (
                attempts > 1
                and isinstance(value, ResponseError)
                and self._missing(value, functions)
            ):
                self._send(keys, argv, callback, attempts - 1)
            else:
                callback(value)

        self.channel.send(self._head(keys) + argv, answered)

    def _head(self, keys: tuple[str, ...]) -> bytes:
        head = self._heads.get((self.functions, keys))
        if head is None:
            verb, name = ("FCALL", self.name) if self.functions else ("EVALSHA", self.sha)
            parts = (verb, name, str(len(keys)), *keys)
            head = b"*%d\r\n" % (len(parts) + ARGV_COUNT) + b"".join(bulk(p) for p in parts)
            self._heads[self.functions, keys] = head
        return head

    def _missing(self, error: ResponseError, functions: bool) -> bool:
        """True when `error` says the server lacks the script; a load is then on its way."""
        message = str(error)
        if functions and "unknown command" in message:  # before Redis 7: no functions
            self.functions = False
        elif not (
            (functions and message.startswith("ERR Function not found"))
            or (not functions and isinstance(error, NoScriptError))
        ):
            return False
        if not self._loading:
            self._loading = True
            if self.functions:
                load = encode("FUNCTION", "LOAD", "REPLACE", self.function_source)
            else:
                load = encode("SCRIPT", "LOAD", self.eval_source)
            self.channel.send(load, self._loaded)
        return True

    def _loaded(self, value: Any) -> None:
        self._loading = False
        if isinstance(value, ResponseError) and "unknown command" in str(value):
            self.functions = False  # the calls behind the load go again as EVALSHA

    async def forget(self) -> None:
        """Close the connection (after an outage: it leads to the server that went away)."""
        await self.channel.close()

    async def aclose(self) -> None:
        await self.forget()
