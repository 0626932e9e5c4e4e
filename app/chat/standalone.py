"""A ChatService for scripts and worker processes that run no server and no event loop.

    with open_chat_service() as chat:          # configuration from the environment / .env
        print(chat.chat([{"role": "user", "content": "Hi"}]).completion.content)
        for piece in chat.chat_stream([{"role": "user", "content": "Tell me more"}]):
            print(piece, end="")

The service runs on a private event loop in a daemon thread; the blocking methods submit to
it from any other thread. State is in-process and usage is not written to the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.chat.assembly import ChatParts, build_chat
from app.chat.blocking import LoopThread
from app.chat.service import ChatService
from app.config import Settings, load_settings
from app.state.build import build_store


@contextmanager
def open_chat_service(settings: Settings | None = None) -> Iterator[ChatService]:
    """Build transport, key state and service on a private loop; close them all on exit."""
    settings = settings or load_settings()
    runner = LoopThread()
    try:
        chat = runner.run(_build(settings))
        try:
            yield chat.service
        finally:
            runner.run(_close(chat))
    finally:
        runner.stop()


async def _build(settings: Settings) -> ChatParts:
    # aiohttp sessions bind to the loop that creates them, so everything is built on `runner`.
    return build_chat(settings, build_store(settings))


async def _close(chat: ChatParts) -> None:
    chat.service.bind_loop(None)
    await chat.service.store.aclose()
    await chat.transport.aclose()
