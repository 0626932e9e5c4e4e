"""The edge middleware's per-request helpers: request ids drawn in blocks, answer headers parsed in
the batch, and the ASGI paths (chat observed, other routes tagged, lifespan untouched)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from app.api.edge import EdgeMiddleware
from app.observability import logs
from app.observability.record import answer_facts, request_info


class TestRequestIds:
    def test_ids_are_32_hex_digits_and_unique_across_blocks(self) -> None:
        ids = [logs.new_request_id() for _ in range(logs.ID_BLOCK * 3 + 5)]
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
        assert len(set(ids)) == len(ids)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
    def test_a_forked_child_never_reuses_the_parents_ids(self) -> None:
        logs.new_request_id()  # the pool now holds ids a child could share
        left = set(logs._ids)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            os.write(write, logs.new_request_id().encode())
            os._exit(0)
        os.close(write)
        child_id = os.read(read, 64).decode()
        os.close(read)
        os.waitpid(pid, 0)
        assert len(child_id) == 32
        assert child_id not in left


class TestAnswerHeaders:
    def test_keypool_headers_are_read(self) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"x-keypool-provider", b"alpha"),
            (b"x-keypool-key-index", b"2"),
            (b"x-keypool-path", b"B"),
            (b"x-keypool-cache", b"miss"),
            (b"x-keypool-cost-usd", b"0.0125"),
        ]
        assert answer_facts(headers) == ("alpha", "2", "B", "miss", 0.0125, False)

    def test_absent_headers_and_a_bad_cost_are_none(self) -> None:
        headers = [(b"x-keypool-cost-usd", b"lots"), (b"content-length", b"2")]
        assert answer_facts(headers) == (None, None, None, None, None, False)
        assert answer_facts(()) == (None, None, None, None, None, False)

    def test_a_stream_is_recognised_and_a_later_duplicate_wins(self) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"x-keypool-provider", b"alpha"),
            (b"x-keypool-provider", b"beta"),
        ]
        provider, *_, streamed = answer_facts(headers)
        assert provider == "beta"
        assert streamed is True


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _answered(scope: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_info(scope))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    # in a task of its own, as servers run requests (the id it sets stays in that context)
    await asyncio.create_task(EdgeMiddleware(app)(scope, _receive, send))
    return sent, seen


@pytest.mark.parametrize("path", ["/api/chat", "/healthz"])
async def test_chat_and_other_routes_echo_the_sent_id(path: str) -> None:
    scope = {"type": "http", "path": path, "method": "POST", "headers": [(b"x-request-id", b"r-1")]}
    sent, seen = await _answered(scope)  # no hub in the scope's state: nothing recorded
    assert (b"x-request-id", b"r-1") in sent[0]["headers"]
    assert seen[0] is not None
    assert seen[0].request_id == "r-1"


async def test_lifespan_passes_untouched() -> None:
    scope: dict[str, Any] = {"type": "lifespan"}
    sent, seen = await _answered(scope)
    assert sent[0]["headers"] == []
    assert seen == [None]
