"""JSON nested deeper than a chat request needs is refused at the door, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

HI = [{"role": "user", "content": "hi"}]


def nested(levels: int) -> str:
    """JSON text nested `levels` deep (clients' encoders refuse to write it themselves)."""
    return "[" * levels + '"x"' + "]" * levels


def body_with(fields: dict[str, Any], name: str, deep: str) -> bytes:
    text = orjson.dumps({**fields, name: "PLACEHOLDER"}).decode()
    return text.replace('"PLACEHOLDER"', deep).encode()


def post(gateway: GatewayServer, path: str, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{gateway.base_url}{path}", content=body, headers=headers, timeout=10)


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"k0": {}})
    return make_gateway(provider_env("alpha", fake, ["k0"]))


@pytest.mark.parametrize("levels", [300, 1000])
def test_v1_extra_field_nested_deep_is_a_400(gateway: GatewayServer, levels: int) -> None:
    body = body_with({"model": "auto", "messages": HI}, "metadata_extra", nested(levels))
    answer = post(gateway, "/v1/chat/completions", body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_v1_content_part_nested_deep_is_a_400(gateway: GatewayServer) -> None:
    part = {"type": "text", "text": "hi", "deep": "PART"}
    body = body_with(
        {"model": "auto"}, "messages", orjson.dumps([{"role": "user", "content": [part]}]).decode()
    )
    answer = post(gateway, "/v1/chat/completions", body.replace(b'"PART"', nested(400).encode()))
    assert answer.status_code == 400


def test_api_chat_nested_deep_is_a_422(gateway: GatewayServer) -> None:
    answer = post(gateway, "/api/chat", body_with({"messages": HI}, "x", nested(300)))
    assert answer.status_code == 422
    assert answer.json()["error"]["type"] == "invalid_request"


def test_ordinary_nesting_still_works(gateway: GatewayServer) -> None:
    body = body_with({"model": "auto", "messages": HI}, "metadata_extra", nested(20))
    answer = post(gateway, "/v1/chat/completions", body)
    assert answer.status_code == 200


async def test_a_websocket_id_nested_deep_gets_an_error_reply(gateway: GatewayServer) -> None:
    async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws") as ws:
        await ws.send(body_with({"messages": HI}, "id", nested(300)).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "error"
        assert reply["id"] is None
        assert reply["error"]["type"] == "invalid_request"
        await ws.send(orjson.dumps({"id": {"a": 1}, "messages": HI}).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (reply["type"], reply["id"]) == ("error", None)  # not echoed unvalidated
