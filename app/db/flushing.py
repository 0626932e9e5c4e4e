"""The background task of the write-behind services (stats writer, user groups)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class FlushLoop:
    """Calls `flush` every `interval_s`, or early after `wake()`, until `stop()`.

    `stop` ends the task and flushes one last time; a bug in one flush (logged, naming
    `component`) must not end all later ones.
    """

    def __init__(
        self,
        flush: Callable[[], Awaitable[bool]],
        interval_s: float,
        component: str,
        logger: logging.Logger,
    ) -> None:
        self._flush = flush
        self._interval = interval_s
        self._name = "keypool-" + component.replace(" ", "-")
        self._logger = logger
        self._failure = f"{component}: unexpected flush failure"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> bool:
        """Stop the task, then flush what is still pending; False if that last flush failed."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        return await self._flush()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._flush()
            except Exception:  # supervisor boundary
                self._logger.exception(self._failure)
