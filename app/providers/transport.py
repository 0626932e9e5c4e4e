"""The one place aiohttp lives: pooled sessions per upstream base URL behind a small Transport seam."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from app.keys.signals import RATE_LIMIT_HEADERS, parse_signal
from app.providers.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
    error_for_status,
)

_MAX_ERROR_BODY = 64 * 1024


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
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("upstream timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamConnectionError("upstream response cut short") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamConnectionError(f"upstream connection error ({type(exc).__name__})") from exc


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
    return str(message)[:500] if message else None


class _AiohttpStream:
    __slots__ = ("_response", "headers")

    def __init__(self, response: aiohttp.ClientResponse, headers: dict[str, str]) -> None:
        self._response = response
        self.headers = headers

    async def lines(self) -> AsyncIterator[bytes]:
        with map_upstream_errors():
            async for line in self._response.content:
                yield line

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must drop its connection so the upstream
        # stops generating (and billing) the moment our client goes away.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport:
    """One keep-alive `ClientSession` per base URL, created at start-up, never per request."""

    def __init__(self, *, limit_per_session: int = 2048) -> None:
        self._limit = limit_per_session
        self._sessions: dict[str, aiohttp.ClientSession] = {}

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
            headers={"Accept-Encoding": "identity", "User-Agent": "keypool"},
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    def _session(self, url: str) -> aiohttp.ClientSession:
        for base, session in self._sessions.items():
            if url.startswith(base):
                return session
        raise UpstreamConnectionError("no upstream session for this provider")

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> UpstreamResponse:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        with map_upstream_errors():
            async with self._session(url).request(
                method, url, data=body, headers=headers, timeout=timeout
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
                url, data=body, headers=headers, timeout=timeout
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
        for session in sessions:
            await session.close()


def _status_error(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    return error_for_status(status, parse_signal(headers, time.time()), upstream_message(body))
