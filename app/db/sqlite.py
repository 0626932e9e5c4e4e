"""Open aiosqlite connections so that a failed open leaves no worker thread behind."""

from __future__ import annotations

import asyncio
import logging
from threading import Thread
from typing import Any, cast

import aiosqlite
from sqlalchemy.engine import URL

_log = logging.getLogger(__name__)

# The worker has at most the driver's open and a no-op stop left to run; the bound only
# guards against a filesystem that hangs in open().
WORKER_EXIT_TIMEOUT_S = 5.0


class SqliteConnector:
    """An ``async_creator`` for SQLAlchemy that waits for aiosqlite's thread after a failed open.

    aiosqlite runs each connection on its own thread. When the open fails (an
    unreachable path, a corrupt file) or is cancelled, it queues that thread's stop and
    raises at once without waiting for it; the thread then reports the stop back with
    ``loop.call_soon_threadsafe``. If the loop closes in between, as it does right after
    the shutdown flush of a gateway whose database is unreachable, that call raises
    "Event loop is closed" in the thread. Waiting for the thread to end before the error
    propagates keeps its last call inside the loop's lifetime.
    """

    def __init__(self, url: URL, **driver_args: Any) -> None:
        # The same arguments SQLAlchemy would pass: async_creator bypasses its own parsing.
        dialect = url.get_dialect()()
        args, params = dialect.create_connect_args(url)
        self._args = list(args)
        self._params = {**params, **driver_args}

    async def __call__(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(*self._args, **self._params)
        # aiosqlite < 0.22 was itself the Thread; 0.22+ holds one (SQLAlchemy reads it too).
        worker = cast(Thread, getattr(connection, "_thread", connection))
        worker.daemon = True  # as SQLAlchemy does: a leaked connection must not block exit
        try:
            return await connection
        except BaseException:
            await wait_for_exit(worker)
            raise


async def wait_for_exit(worker: Thread, timeout_s: float = WORKER_EXIT_TIMEOUT_S) -> None:
    """Block (off the loop) until ``worker`` has ended, so it can no longer call into the loop."""
    if not worker.is_alive():
        return
    await asyncio.to_thread(worker.join, timeout_s)
    if worker.is_alive():
        _log.warning("sqlite: a connection thread did not stop within %.0fs", timeout_s)
