"""The blocking `chat`/`chat_stream` from plain threads beside a running server, and standalone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from app.chat.service import ChatService
from app.chat.standalone import open_chat_service
from app.config import load_settings
from app.errors import AllKeysFailed
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import HELLO, upstream_idle, wait_for

T = TypeVar("T")
TEXT = "w0 w1 w2 w3 w4 "
MESSAGES: list[dict[str, Any]] = HELLO["messages"]


def in_thread(work: Callable[[], T]) -> T:
    """Run `work` on a plain thread (no event loop) and return its result or raise its error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "blocking call did not return"
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def service_of(gateway: GatewayServer) -> ChatService:
    service: ChatService = gateway.server.lifespan.state["runtime"].service
    return service


def on_server_loop(gateway: GatewayServer, work: Callable[[], T]) -> T:
    """Call `work` from a coroutine on the server's own loop (as a route handler would)."""

    async def run() -> T:
        return work()

    assert gateway.loop is not None
    return asyncio.run_coroutine_threadsafe(run(), gateway.loop).result(timeout=10)


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"k0": {}})
    return make_gateway(provider_env("alpha", fake, ["k0"]))


class TestFromAThread:
    def test_chat(self, gateway: GatewayServer):
        service = service_of(gateway)
        result = in_thread(lambda: service.chat(MESSAGES))
        assert result.completion.content == TEXT
        assert (result.provider, result.path) == ("alpha", "A")
        result = in_thread(lambda: service.chat(MESSAGES, model="fake-small", max_tokens=2))
        assert (result.completion.content, result.path) == ("w0 w1 ", "B")

    def test_chat_stream(self, gateway: GatewayServer):
        service = service_of(gateway)
        pieces = in_thread(lambda: list(service.chat_stream(MESSAGES)))
        assert pieces == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]

    def test_many_threads_at_once(self, gateway: GatewayServer):
        service = service_of(gateway)
        results: list[str] = []

        def worker() -> None:
            results.append("".join(service.chat_stream(MESSAGES)))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert results == [TEXT] * 8

    def test_breaking_out_of_a_stream_cancels_upstream(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"chunks": 10_000, "chunk_interval_ms": 10}})
        service = service_of(make_gateway(provider_env("alpha", fake, ["k0"])))

        def first_piece() -> str:
            for piece in service.chat_stream(MESSAGES):
                return piece
            raise AssertionError("no piece")

        assert in_thread(first_piece) == "w0 "
        wait_for(lambda: upstream_idle(fake.stats()), what="upstream idle")

    def test_failure_before_the_first_token_raises_at_the_first_next(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"mode": "error_500"}})
        service = service_of(make_gateway(provider_env("alpha", fake, ["k0"])))
        stream = service.chat_stream(MESSAGES, model="fake-small")
        with pytest.raises(AllKeysFailed):
            in_thread(lambda: next(stream))
        with pytest.raises(AllKeysFailed):
            in_thread(lambda: service.chat(MESSAGES, model="fake-small"))


class TestOnTheServersLoop:
    def test_async_entry_points(self, gateway: GatewayServer):
        service = service_of(gateway)

        async def both() -> tuple[str, str]:
            result = await service.chat_async(MESSAGES)
            pieces = [p async for p in service.chat_stream_async(MESSAGES, model="fake-small")]
            return result.completion.content, "".join(pieces)

        assert gateway.loop is not None
        assert asyncio.run_coroutine_threadsafe(both(), gateway.loop).result(10) == (TEXT, TEXT)

    def test_chat_raises_instead_of_deadlocking(self, gateway: GatewayServer):
        service = service_of(gateway)
        with pytest.raises(RuntimeError, match="own event loop"):
            on_server_loop(gateway, lambda: service.chat(MESSAGES))

    def test_chat_stream_raises_at_the_call(self, gateway: GatewayServer):
        service = service_of(gateway)
        with pytest.raises(RuntimeError, match="own event loop"):
            on_server_loop(gateway, lambda: service.chat_stream(MESSAGES))
        # the loop is still healthy afterwards
        assert in_thread(lambda: service.chat(MESSAGES)).completion.content == TEXT


class TestStandalone:
    def test_script_without_a_loop(self, make_fake: FakeFactory):
        fake = make_fake({"k0": {"mode": "error_500"}, "k1": {}})
        settings = load_settings(
            {**provider_env("alpha", fake, ["k0", "k1"]), "DATABASE_URL": "sqlite+aiosqlite://"}
        )
        with open_chat_service(settings) as chat:
            result = chat.chat(MESSAGES)
            assert result.completion.content == TEXT
            assert [a.key_index for a in result.attempts] == [0]
            assert "".join(chat.chat_stream(MESSAGES, model="fake-small")) == TEXT
        with pytest.raises(RuntimeError, match="not running"):
            chat.chat(MESSAGES)
        # The fake sees the closed connections a moment after the script's pool closed them.
        wait_for(lambda: upstream_idle(fake.stats()), what="upstream idle")
