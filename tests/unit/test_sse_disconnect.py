"""A client that leaves before the first token: a quiet 499, whatever the opener is doing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app.api.sse import CLIENT_CLOSED, open_while_connected
from app.chat.streams import ChatStream


class LeavingClient:
    """Stands in for the request: its next ASGI message is the disconnect."""

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}


async def slow_to_cancel() -> ChatStream:
    """Like fallback releasing a key: cancellation takes one more trip through the loop."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        raise
    raise AssertionError("unreachable")


async def test_leaving_before_the_first_token_is_a_499_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    answer = await open_while_connected(LeavingClient(), slow_to_cancel())  # type: ignore[arg-type]
    assert not isinstance(answer, ChatStream)
    assert answer.status_code == CLIENT_CLOSED
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
