"""How `keypool serve` and `keypool demo` run uvicorn: timeouts and bounds for hostile clients.

uvicorn has no header read timeout: a client trickling header bytes (or opening a connection
and sending nothing) holds it forever. The protocol classes here close a connection whose next
request's headers have not all arrived within HEADER_TIMEOUT_S (after connect or after the
previous response). Bodies are bounded by BODY_READ_TIMEOUT_S in app/api/body.py (408).
Above LIMIT_CONCURRENCY connections or tasks per worker, uvicorn answers 503 at once; here that
answer is our JSON envelope. A reverse proxy in front (docker-compose ships nginx) is still the
right place to bound connections per client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http import h11_impl

try:  # uvicorn[standard] brings httptools; h11 is the pure-Python fallback
    from uvicorn.protocols.http import httptools_impl
except ImportError:  # pragma: no cover - depends on the installed extras
    httptools_impl = None  # type: ignore[assignment]

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # idle keep-alive connections are closed after this (uvicorn's default)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; bigger → 400 and close
LIMIT_CONCURRENCY = 4096  # connections + tasks per worker before 503 overloaded


class _HeaderDeadline:
    """Mixin for uvicorn's HTTP protocols: headers must complete within HEADER_TIMEOUT_S."""

    _header_timer: asyncio.TimerHandle | None = None
    _armed_cycle: Any = None

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._armed_cycle = self.cycle  # type: ignore[attr-defined]
        self._header_timer = self.loop.call_later(  # type: ignore[attr-defined]
            HEADER_TIMEOUT_S, self._header_deadline_passed
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        # A new request cycle exists once a request's headers were all received.
        if self.cycle is self._armed_cycle and not transport.is_closing():  # type: ignore[attr-defined]
            transport.close()

    # The protocol's own hooks, extended (this mixin comes first in each class's bases).

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]


class H11Protocol(_HeaderDeadline, h11_impl.H11Protocol):
    pass


if httptools_impl is not None:

    class HttpToolsProtocol(_HeaderDeadline, httptools_impl.HttpToolsProtocol):
        pass

    HTTP_PROTOCOL: type[asyncio.Protocol] = HttpToolsProtocol
else:  # pragma: no cover
    HTTP_PROTOCOL = H11Protocol


_OVERLOADED = orjson.dumps(
    {"error": {"type": "overloaded", "message": "the gateway is at its connection limit; retry"}}
)


async def overloaded(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's over-`limit_concurrency` answer, as our JSON envelope instead of plain text."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_OVERLOADED)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _OVERLOADED, "more_body": False})


# uvicorn looks the 503 app up by this module-level name when the limit is reached.
setattr(h11_impl, "service_unavailable", overloaded)  # noqa: B010 - not exported: patched by name
if httptools_impl is not None:
    setattr(httptools_impl, "service_unavailable", overloaded)  # noqa: B010


def server_options() -> dict[str, Any]:
    """uvicorn.run / uvicorn.Config keyword arguments for the bounds above."""
    return {
        "http": HTTP_PROTOCOL,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": LIMIT_CONCURRENCY,
    }
