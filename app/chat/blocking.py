"""Blocking chat for threads and scripts: run the async service on its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def check_caller(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The loop to submit to; refuses the loop's own thread, where waiting would deadlock."""
    if loop is None or loop.is_closed():
        raise RuntimeError(
            "the chat service is not running: serve it (the app's lifespan) or open one with "
            "app.chat.standalone.open_chat_service()"
        )
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            "blocking chat()/chat_stream() called on the chat service's own event loop, which "
            "would deadlock: await chat_async()/iterate chat_stream_async() there instead"
        )
    return loop


def call(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T]) -> T:
    try:
        target = check_caller(loop)
    except RuntimeError:
        coro.close()
        raise
    return asyncio.run_coroutine_threadsafe(coro, target).result()


def iterate(loop: asyncio.AbstractEventLoop, agen: AsyncIterator[T]) -> Iterator[T]:
    """Pull an async iterator from another thread; closing the generator closes the stream.

    Call `check_caller(loop)` first: as a generator, this body only runs at the first `next`.
    """
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(_next(agen), loop).result()
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(agen, "aclose", None)
        if closer is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(closer(), loop).result()


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


class LoopThread:
    """A private event loop in a daemon thread, for scripts without one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="keypool-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Stop the loop and close it, after finalising any async generators still open."""
        if self.loop.is_closed():
            return
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
