"""WS /api/chat/ws with a real websocket client against the real server and the fake provider."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import ADMIN_TOKEN, HELLO, upstream_idle, wait_for

TEXT = "w0 w1 w2 w3 w4 "
MESSAGES = HELLO["messages"]


def ws_url(gateway: GatewayServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{gateway.port}/api/chat/ws{query}"


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def receive(ws: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    return event


async def until_end(ws: ClientConnection) -> list[dict[str, Any]]:
    """Events up to and including the next `done` or `error`."""
    events = [await receive(ws)]
    while events[-1]["type"] not in ("done", "error"):
        events.append(await receive(ws))
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "chunk")


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"k0": {}, "k1": {}})
    env = {**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": ADMIN_TOKEN}
    return make_gateway({**env, "MAX_MESSAGE_CHARS": "4096"})


class TestRequests:
    async def test_many_requests_over_one_socket_echo_their_ids(self, gateway: GatewayServer):
        async with connect(ws_url(gateway)) as ws:
            for request_id in ("first", 2, "third"):
                await send(ws, {"id": request_id, "messages": MESSAGES})
                events = await until_end(ws)
                assert {e["id"] for e in events} == {request_id}
                assert [events[0]["type"], events[-1]["type"]] == ["start", "done"]
                assert text_of(events) == TEXT
                assert events[-1]["usage"]["completion_tokens"] == 5
            await send(ws, {"id": "b", "messages": MESSAGES, "model": "fake-small"})
            events = await until_end(ws)
            assert events[0]["path"] == "B"

    async def test_concurrent_requests_are_tagged(self, gateway: GatewayServer):
        async with connect(ws_url(gateway)) as ws:
            for request_id in range(8):
                await send(ws, {"id": request_id, "messages": MESSAGES})
            by_id: dict[int, list[dict[str, Any]]] = defaultdict(list)
            while sum(1 for events in by_id.values() if events[-1]["type"] == "done") < 8:
                event = await receive(ws)
                by_id[event["id"]].append(event)
        assert sorted(by_id) == list(range(8))
        for events in by_id.values():
            assert [e["type"] for e in events] == ["start"] + ["chunk"] * 5 + ["done"]
            assert text_of(events) == TEXT

    async def test_failures_are_error_events_with_status(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"bad": {"mode": "error_500"}, "cut": {"mode": "stream_cut"}})
        gateway = make_gateway(
            {
                **provider_env("alpha", fake, ["bad"]),
                **provider_env("beta", fake, ["cut"], model="fake-large"),
            }
        )
        async with connect(ws_url(gateway)) as ws:
            await send(ws, {"id": "a", "messages": MESSAGES, "provider": "alpha"})
            (event,) = await until_end(ws)
            assert (event["type"], event["id"], event["status"]) == ("error", "a", 503)
            assert event["error"]["type"] == "all_providers_failed"
            await send(ws, {"id": "b", "messages": MESSAGES, "provider": "beta"})
            events = await until_end(ws)
            assert [e["type"] for e in events] == ["start", "chunk", "chunk", "error"]
            assert events[-1]["error"]["type"] == "upstream_stream_error"
            assert {e["id"] for e in events} == {"b"}


class TestBadFrames:
    @pytest.mark.parametrize(
        ("frame", "request_id"),
        [
            ("{not json", None),
            ('["a", "list"]', None),
            ('{"id": "x", "messages": []}', "x"),
            ('{"id": "y", "messages": [{"role": "robot", "content": "hi"}]}', "y"),
            ('{"id": "z", "messages": [{"role": "user", "content": "' + "x" * 5000 + '"}]}', "z"),
            (b"\xff\xfe binary junk", None),
        ],
        ids=["bad-json", "not-an-object", "empty-messages", "bad-role", "oversize", "binary"],
    )
    async def test_invalid_request_event_then_the_socket_still_works(
        self, gateway: GatewayServer, frame: str | bytes, request_id: str | None
    ):
        async with connect(ws_url(gateway)) as ws:
            await ws.send(frame)
            event = await receive(ws)
            assert event["type"] == "error"
            assert event["id"] == request_id
            assert event["error"]["type"] == "invalid_request"
            assert event["status"] == 422
            await send(ws, {"id": "ok", "messages": MESSAGES})
            events = await until_end(ws)
            assert events[-1]["type"] == "done"
            assert text_of(events) == TEXT


class TestUsers:
    @pytest.mark.parametrize(
        ("query", "headers"), [("?user_id=ann", {}), ("", {"X-User-Id": "ann"})]
    )
    async def test_user_from_query_or_header_gets_a_group(
        self, gateway: GatewayServer, query: str, headers: dict[str, str]
    ):
        async with connect(ws_url(gateway, query), additional_headers=headers) as ws:
            await send(ws, {"id": 1, "messages": MESSAGES})
            assert (await until_end(ws))[-1]["type"] == "done"
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            response = await client.get(
                "/api/admin/users/ann", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
        assert response.status_code == 200
        assert response.json()["api_key_group"] in (1, 2)


class TestClose:
    async def test_closed_socket_cancels_in_flight_streams(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        slow = make_fake({"slow": {"chunks": 10_000, "chunk_interval_ms": 20}})
        quick = make_fake({"quick": {}})
        gateway = make_gateway(
            {
                **provider_env("alpha", slow, ["slow"]),
                **provider_env("beta", quick, ["quick"], model="fake-large"),
            }
        )
        async with connect(ws_url(gateway)) as ws:
            for request_id in ("s1", "s2"):
                await send(ws, {"id": request_id, "messages": MESSAGES, "provider": "alpha"})
            seen: set[str] = set()
            while seen != {"s1", "s2"}:
                event = await receive(ws)
                if event["type"] == "chunk":
                    seen.add(event["id"])
            # a quick request on the same socket finishes while both slow ones stream on
            await send(ws, {"id": "q", "messages": MESSAGES, "provider": "beta"})
            event = await receive(ws)
            while event["id"] != "q" or event["type"] not in ("done", "error"):
                event = await receive(ws)
            assert event["type"] == "done"
            assert slow.stats()["streams_open"] == 2
        await asyncio.to_thread(wait_for, lambda: upstream_idle(slow.stats()), 5.0, "upstream idle")


async def test_an_over_long_user_id_is_refused_with_an_error_event(
    make_fake: FakeFactory, make_gateway: GatewayFactory
):
    fake = make_fake({"k0": {}})
    gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
    url = gateway.base_url.replace("http", "ws") + "/api/chat/ws?user_id=" + "u" * 300
    async with connect(url) as socket:
        event = orjson.loads(await socket.recv())
        assert event["type"] == "error"
        assert event["error"]["type"] == "invalid_request"
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
