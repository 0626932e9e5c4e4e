"""Blocking chat for threads and scripts: run the async service on its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def _check_thread(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is None or loop.is_closed():
        raise RuntimeError("the chat service is not running; start it (lifespan or standalone())")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("blocking chat called on the service's own event loop: use chat_async")
    return loop


def call(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, T]) -> T:
    try:
        target = _check_thread(loop)
    except RuntimeError:
        coro.close()
        raise
    return asyncio.run_coroutine_threadsafe(coro, target).result()


def iterate(loop: asyncio.AbstractEventLoop | None, agen: AsyncIterator[T]) -> Iterator[T]:
    """Pull an async iterator from another thread; closing the generator closes the stream."""
    target = _check_thread(loop)
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(_next(agen), target).result()
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(agen, "aclose", None)
        if closer is not None and not target.is_closed():
            asyncio.run_coroutine_threadsafe(closer(), target).result()


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
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
