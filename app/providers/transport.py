"""The one place aiohttp lives: pooled sessions per upstream base URL behind a small Transport seam."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from app.keys.signals import RATE_LIMIT_HEADERS, parse_signal
from app.providers.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
    error_for_status,
    quota_exhausted,
)

_MAX_ERROR_BODY = 64 * 1024
# The longest SSE line accepted (a big tool-call delta can be long, but not unbounded).
_MAX_STREAM_LINE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class UpstreamStream(Protocol):
    """An opened 2xx streaming response; `aclose` must release (and on cancel, drop) the connection."""

    headers: dict[str, str]

    def lines(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """httpx's one-method seam idea: the adapter sees bytes and statuses, never aiohttp."""

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        """Raise UpstreamError for transport failures and non-2xx answers."""
        ...

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream: ...

    async def aclose(self) -> None: ...


@contextmanager
def map_upstream_errors() -> Iterator[None]:
    """Re-raise aiohttp/asyncio failures as the most specific UpstreamError, chained with `from`."""
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("upstream timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamConnectionError("upstream response cut short") from exc
    except HttpProcessingError as exc:
        raise UpstreamConnectionError("upstream sent a malformed response") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamConnectionError(f"upstream connection error ({type(exc).__name__})") from exc
    except Exception as exc:
        # e.g. aiohttp's ValueError for a URL it will not send: still one key's failure, which
        # falls over to the next, never a 500 for the whole request.
        raise UpstreamConnectionError(f"upstream request failed ({type(exc).__name__})") from exc


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in RATE_LIMIT_HEADERS if name in headers}


def upstream_message(body: bytes) -> str | None:
    """The `error.message` of an OpenAI-style error body, if there is one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    # Not cut here: the client redacts its key first, then cuts (a cut could split the key).
    return str(message)[:_MAX_ERROR_BODY] if message else None


class _AiohttpStream:
    """Lines of a streaming body, split from whatever has arrived (one read per packet, not one
    per line: at a thousand streams the per-read machinery is most of the relay's CPU).

    A plain iterator, not a generator: nothing is left suspended for the garbage collector to
    finalise when a stream is abandoned half-way. Blank lines are skipped.
    """

    __slots__ = ("_eof", "_error", "_lines", "_partial", "_response", "headers")

    def __init__(self, response: aiohttp.ClientResponse, headers: dict[str, str]) -> None:
        self._response = response
        self._lines: deque[bytes] = deque()
        self._partial = b""
        self._eof = False
        self._error: UpstreamError | None = None
        self.headers = headers

    def lines(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while not self._lines:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise StopAsyncIteration
            await self._fill()
        return self._lines.popleft()

    async def _fill(self) -> None:
        content = self._response.content
        try:
            with map_upstream_errors():
                data = await content.readany()
        except UpstreamError as exc:
            self._error = exc
            data = _salvage(content)  # complete lines received before the break still count
        if not data and self._error is None:
            self._eof = True  # a last line without its newline is still a line
            if self._partial.strip():
                self._lines.append(self._partial)
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self._lines.extend(line for line in lines if line and line != b"\r")
        if len(self._partial) > _MAX_STREAM_LINE and self._error is None:
            self._error = UpstreamConnectionError("upstream sent an oversize stream event")

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must drop its connection so the upstream
        # stops generating (and billing) the moment our client goes away.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _salvage(content: aiohttp.StreamReader) -> bytes:
    """The bytes received before the connection broke.

    aiohttp's StreamReader raises a stored error before it returns buffered data, so events
    that arrived just before a cut would be lost (and whether they are depends on timing).
    There is no public accessor, hence the guarded private reads; if they are ever renamed,
    this degrades to aiohttp's own behaviour.
    """
    buffer = getattr(content, "_buffer", None)
    if not buffer:
        return b""
    data = b"".join(buffer)[getattr(content, "_buffer_offset", 0) :]
    buffer.clear()
    return data


class AiohttpTransport:
    """One keep-alive `ClientSession` per base URL, created at start-up, never per request."""

    def __init__(self, *, limit_per_session: int = 2048) -> None:
        self._limit = limit_per_session
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._by_url: dict[str, aiohttp.ClientSession] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def open_session(self, base_url: str) -> None:
        if base_url in self._sessions:
            return
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._sessions[base_url] = aiohttp.ClientSession(
            base_url=None,
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    def _session(self, url: str) -> aiohttp.ClientSession:
        session = self._by_url.get(url)
        if session is None:
            base = next((b for b in self._sessions if url.startswith(b)), None)
            if base is None:
                raise UpstreamConnectionError("no upstream session for this provider")
            session = self._by_url[url] = self._sessions[base]
        return session

    def _timeout(self, total_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(total_s)
        if timeout is None:
            timeout = self._timeouts[total_s] = aiohttp.ClientTimeout(total=total_s)
        return timeout

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        with map_upstream_errors():
            async with self._session(url).request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(timeout_s),
                allow_redirects=False,  # a followed 307 would re-post the prompt elsewhere
            ) as response:
                payload = await response.read()
                limits = rate_limit_headers(response.headers)
        if response.status >= 300:
            raise _status_error(response.status, limits, payload)
        return UpstreamResponse(response.status, limits, payload)

    async def open_stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> UpstreamStream:
        # No total timeout on a stream: connect and every gap between chunks are bounded instead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        with map_upstream_errors():
            response = await self._session(url).post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
            limits = rate_limit_headers(response.headers)
            if response.status >= 300:
                try:
                    payload = await asyncio.wait_for(
                        response.content.read(_MAX_ERROR_BODY), timeout_s
                    )
                finally:
                    response.release()
                raise _status_error(response.status, limits, payload)
        return _AiohttpStream(response, limits)

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        self._by_url.clear()
        for session in sessions:
            await session.close()


def _status_error(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    signal = parse_signal(headers, time.time())
    quota = status == 429 and quota_exhausted(body)
    return error_for_status(status, signal, upstream_message(body), quota=quota)
