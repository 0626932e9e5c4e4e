"""The background loop of the write-behind services (stats writer, user groups)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


async def flush_periodically(
    flush: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    wake: asyncio.Event,
    closing: Callable[[], bool],
    logger: logging.Logger,
    failure: str,
) -> None:
    """Call `flush` every `interval_s`, or early when `wake` is set, until `closing()`.

    The final flush is the owner's `aclose`; a bug in one flush (logged as `failure`) must not
    end all later ones.
    """
    while not closing():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await wake.wait()
        wake.clear()
        if closing():
            return
        try:
            await flush()
        except Exception:  # supervisor boundary
            logger.exception(failure)
