"""A SQLite database that cannot be opened leaves no aiosqlite thread behind its event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.db.session import create_engine


def live_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("(_connection_worker_thread)")]


async def open_and_fail(url: str, pooled: bool) -> None:
    engine = create_engine(url, pooled=pooled)
    try:
        with pytest.raises(OperationalError, match="unable to open database file"):
            async with engine.connect():
                pass
        assert live_workers() == []  # already gone when the error reaches the caller
    finally:
        await engine.dispose()


@pytest.mark.parametrize("pooled", [True, False])
def test_a_failed_open_is_over_before_the_loop_closes(tmp_path: Path, pooled: bool):
    """The loop closes right after the failure, as at a gateway's shutdown flush; a
    worker thread still running then would raise "Event loop is closed" (an unhandled
    thread exception, which pytest turns into a failure)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    for _ in range(20):
        asyncio.run(open_and_fail(url, pooled))
    assert live_workers() == []
