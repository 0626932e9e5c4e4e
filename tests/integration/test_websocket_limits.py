"""Per-socket bounds: frame size enforced by the server, and requests in flight per socket."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"k0": {"ttft_ms": 1500}, "k1": {"ttft_ms": 1500}})
    env = provider_env("alpha", fake, ["k0", "k1"])
    return make_gateway({**env, "WS_MAX_MESSAGE_BYTES": "4096", "WS_MAX_INFLIGHT": "3"})


async def receive(ws: Any) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return event


async def test_more_than_ws_max_inflight_requests_are_refused_at_once(
    gateway: GatewayServer,
) -> None:
    async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws") as ws:
        for i in range(5):
            await ws.send(orjson.dumps({"id": i, "messages": HI}).decode())
        refused = [await receive(ws), await receive(ws)]  # before any slow answer starts
        assert {e["id"] for e in refused} == {3, 4}
        assert {e["error"]["type"] for e in refused} == {"too_many_in_flight"}
        assert {e["status"] for e in refused} == {429}


async def test_a_frame_over_ws_max_message_bytes_is_refused_by_the_server(
    gateway: GatewayServer,
) -> None:
    async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws", max_size=None) as ws:
        await ws.send("x" * 10_000)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big: never buffered whole
