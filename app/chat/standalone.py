"""A ChatService for scripts and worker processes that run no server and no event loop.

    with open_chat_service() as chat:          # configuration from the environment / .env
        print(chat.chat([{"role": "user", "content": "Hi"}]).completion.content)
        for piece in chat.chat_stream([{"role": "user", "content": "Tell me more"}]):
            print(piece, end="")

The service runs on a private event loop in a daemon thread; the blocking methods submit to
it from any other thread. State is in-process and usage is not written to the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from app.chat.blocking import LoopThread
from app.chat.service import ChatService
from app.config import Settings, load_settings
from app.providers.transport import AiohttpTransport
from app.runtime import build_store


@contextmanager
def open_chat_service(settings: Settings | None = None) -> Iterator[ChatService]:
    """Build transport, key state and service on a private loop; close them all on exit."""
    settings = settings or load_settings()
    runner = LoopThread()
    try:
        service, transport = runner.run(_build(settings))
        try:
            yield service
        finally:
            service.bind_loop(None)
            runner.run(_close(service, transport))
    finally:
        runner.stop()


async def _build(settings: Settings) -> tuple[ChatService, AiohttpTransport]:
    # aiohttp sessions bind to the loop that creates them, so everything is built on `runner`.
    transport = AiohttpTransport()
    for provider in settings.providers:
        transport.open_session(provider.base_url)
    service = ChatService(
        settings.providers,
        transport,
        build_store(settings),
        group_count=settings.groups,
        rotate_providers=settings.provider_rotation == "round_robin",
    )
    service.model_groups = settings.groups_by_name
    service.bind_loop(asyncio.get_running_loop())
    return service, transport


async def _close(service: ChatService, transport: AiohttpTransport) -> None:
    await service.store.aclose()
    await transport.aclose()
