"""One pipelined Redis connection: the hot path of the shared key state.

Every script call of a process goes down one connection, in the order the calls were made, and
Redis answers them in that order. Two things follow. A call costs no connection pool: no lock,
no checkout, no health poll, only a few bytes appended to a buffer. And order is free: a release
queued before an acquire of the same process is applied in Redis before that acquire reads the
state, so a release need not be awaited to be exact. Everything queued within one event-loop
tick goes out in one write, so under load many calls share one system call (and Redis reads
them with one).

The connection itself is opened by redis-py (its URL options, AUTH, SELECT, TLS), then this
module takes the socket over and speaks RESP directly. A reply that never comes within
`timeout_s` fails the connection and every call on it (the caller falls back to local state);
so does a lost connection. A cancelled caller only drops its reply: the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

logger = logging.getLogger("keypool.state")

# A reply (bytes, int, str, None or a list of them) or the error that replaced it.
Callback = Callable[[Any], None]
_CRLF = b"\r\n"


def encode(*parts: bytes | str) -> bytes:
    """A command as RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def bulk(data: bytes | str) -> bytes:
    """One argument as a RESP bulk string (to splice pre-encoded commands together)."""
    raw = data.encode() if isinstance(data, str) else data
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def _error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


def parse(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One reply at `pos`: (value, next position), or None when more bytes are needed.

    RESP2, and the RESP3 scalars a script's answer can take, should the URL ask for RESP3.
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        return None
    kind, line, after = buf[pos], buf[pos + 1 : end], end + 2
    if kind == 36:  # $ bulk string
        return _bulk(buf, int(line), after)
    if kind == 58:  # : integer
        return int(line), after
    if kind == 43:  # + simple string
        return line.decode(), after
    if kind == 45:  # - error
        return _error(line.decode(errors="replace")), after
    if kind == 42:  # * array
        return _array(buf, int(line), after)
    if kind == 95:  # _ null (RESP3)
        return None, after
    raise RedisConnectionError(f"unexpected reply from Redis: {bytes(buf[pos:end])[:40]!r}")


def _bulk(buf: bytearray, size: int, start: int) -> tuple[Any, int] | None:
    if size < 0:
        return None, start
    stop = start + size
    if len(buf) < stop + 2:
        return None
    return bytes(buf[start:stop]), stop + 2


def _array(buf: bytearray, count: int, pos: int) -> tuple[Any, int] | None:
    if count < 0:
        return None, pos
    items = []
    for _ in range(count):
        item = parse(buf, pos)
        if item is None:
            return None
        value, pos = item
        items.append(value)
    return items, pos


class _Protocol(asyncio.Protocol):
    """Reads replies off the socket and hands each to the oldest waiting call."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None  # held: it closes the socket when freed

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, waiting = 0, self.channel._waiting
        try:
            while True:
                item = parse(buf, pos)
                if item is None:
                    break
                value, pos = item
                if not waiting:
                    raise RedisConnectionError("a reply from Redis that no call waited for")
                callback, _ = waiting.popleft()
                _deliver(callback, value)
        except (RedisConnectionError, ValueError) as exc:
            self.channel._drop(self, exc)
            return
        if pos:
            del buf[:pos]

    def eof_received(self) -> bool:
        self.channel._drop(self, RedisConnectionError("Redis closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._drop(self, exc or RedisConnectionError("connection to Redis lost"))


def resolver(future: asyncio.Future[Any]) -> Callback:
    """A callback that answers `future`, unless its caller was cancelled meanwhile."""

    def settle(value: Any) -> None:
        if future.done():
            return
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)

    return settle


def _fresh(exc: BaseException) -> Exception:
    """One exception per failed call: a shared one would gather every caller's traceback."""
    if isinstance(exc, TimeoutError):
        return TimeoutError(*exc.args)
    return RedisConnectionError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _deliver(callback: Callback, value: Any) -> None:
    try:
        callback(value)
    except Exception:  # a caller's bug must not stop the replies behind it
        logger.exception("redis reply handler failed")


async def open_socket(client: Redis) -> asyncio.StreamWriter:
    """A connection made by redis-py with the client's settings, then handed over (redis-py
    forgets it): URL options, AUTH, SELECT and TLS stay redis-py's business. The stream writer
    comes along because it closes its transport when it is garbage collected."""
    pool = client.connection_pool
    conn = pool.connection_class(**pool.connection_kwargs)
    await conn.connect()  # type: ignore[no-untyped-call]
    reader, writer = conn._reader, conn._writer
    conn._reader = conn._writer = None
    if writer is None or reader is None:
        raise RedisConnectionError("redis-py gave no stream to take over")
    if getattr(reader, "_buffer", b""):
        writer.close()
        raise RedisConnectionError("unread data after the handshake")
    return writer


class Channel:
    """Calls in order over one connection, opened on first use and again after a failure."""

    def __init__(
        self, opener: Callable[[], Awaitable[asyncio.StreamWriter]], *, timeout_s: float
    ) -> None:
        self._opener = opener
        self.timeout_s = timeout_s
        self._out: list[bytes] = []
        self._waiting: deque[tuple[Callback, float]] = deque()
        self._proto: _Protocol | None = None
        self._opening: asyncio.Task[None] | None = None
        self._flushing = False
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, command: bytes, callback: Callback) -> None:
        """Queue an encoded command; its reply or error goes to `callback`, in sending order."""
        loop = asyncio.get_running_loop()
        self._out.append(command)
        self._waiting.append((callback, loop.time()))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_s, self._check_deadline)
        if self._proto is None:
            if self._opening is None:
                self._opening = loop.create_task(self._open())
        elif not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """`send`, answered through a future (a cancelled caller simply drops its reply)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(command, resolver(future))
        return future

    def _flush(self) -> None:
        self._flushing = False
        proto = self._proto
        if proto is None or proto.transport is None or not self._out:
            return
        out, self._out = self._out, []
        proto.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _open(self) -> None:
        proto = _Protocol(self)
        try:
            async with asyncio.timeout(self.timeout_s):  # a server that accepts, then is mute
                writer = await self._opener()
        except asyncio.CancelledError:
            self._opening = None
            self._fail(RedisConnectionError("connecting to Redis was cancelled"))
            raise
        except Exception as exc:  # redis-py raises its own errors and OSError
            self._opening = None
            self._fail(exc)
            return
        self._opening = None
        transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        transport.set_protocol(proto)
        proto.transport, proto.writer = transport, writer
        self._proto = proto
        self._flush()

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][1] + self.timeout_s
        if loop.time() >= due:
            self._fail(TimeoutError(f"Redis did not answer within {self.timeout_s:g} s"))
        else:
            self._watchdog = loop.call_at(due, self._check_deadline)

    def _drop(self, proto: _Protocol, exc: BaseException) -> None:
        """The connection failed (or closed): every call on it fails with `exc`."""
        if proto is self._proto:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        self._out.clear()
        waiting, self._waiting = self._waiting, deque()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for callback, _ in waiting:
            _deliver(callback, _fresh(exc))

    async def close(self) -> None:
        """Close the connection; calls still waiting fail (they would lead to a server that
        went away, after an outage)."""
        opening = self._opening
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        self._fail(RedisConnectionError("connection to Redis closed"))
