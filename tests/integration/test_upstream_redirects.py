"""An upstream redirect is an upstream failure: the prompt is never re-posted elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.providers.errors import UpstreamConnectionError, UpstreamServerError
from app.providers.transport import AiohttpTransport


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[TestServer, list[str]]]:
    posted: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere/chat/completions")

    async def elsewhere(request: web.Request) -> web.Response:
        posted.append(await request.text())
        return web.json_response({"choices": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", redirect)
    app.router.add_post("/elsewhere/chat/completions", elsewhere)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, posted
    await server.close()


async def test_a_307_is_not_followed_and_counts_as_an_upstream_error(
    upstream: tuple[TestServer, list[str]],
) -> None:
    server, posted = upstream
    base = str(server.make_url("/v1"))
    transport = AiohttpTransport()
    transport.open_session(base)
    try:
        for call in (
            transport.request("POST", f"{base}/chat/completions", {}, b'{"p":1}', 5),
            transport.open_stream(f"{base}/chat/completions", {}, b'{"p":1}', 5),
        ):
            with pytest.raises(UpstreamServerError) as caught:
                await call
            assert caught.value.status == 307
    finally:
        await transport.aclose()
    assert posted == []


async def test_a_request_aiohttp_refuses_is_a_connection_failure_not_a_crash() -> None:
    # Credentials in the URL plus our Authorization header: aiohttp raises ValueError.
    base = "http://user:pw@127.0.0.1:9/v1"
    transport = AiohttpTransport()
    transport.open_session(base)
    try:
        with pytest.raises(UpstreamConnectionError):
            await transport.request(
                "POST", f"{base}/chat/completions", {"Authorization": "Bearer k"}, b"{}", 5
            )
    finally:
        await transport.aclose()
