"""Engines fail fast: ``ping`` answers within its bound whether the database is up, gone or hung."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.session import create_engine, ping
from tests.support.databases import closed_port


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung database."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def ping_timed(engine: AsyncEngine, timeout_s: float = 2.0) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        return await ping(engine, timeout_s), time.monotonic() - started
    finally:
        await engine.dispose()


class TestPing:
    async def test_true_for_a_live_database(self, db_url: str):
        ok, _ = await ping_timed(create_engine(db_url))

        assert ok is True

    async def test_false_at_once_when_postgres_refuses(self):
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x"

        ok, elapsed = await ping_timed(create_engine(url))

        assert ok is False
        assert elapsed < 1.0

    async def test_false_within_its_timeout_when_postgres_hangs(self, silent_server: int):
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/x"

        ok, elapsed = await ping_timed(create_engine(url), timeout_s=0.3)

        assert ok is False
        assert elapsed < 1.5

    async def test_false_when_the_sqlite_file_is_not_a_database(self, tmp_path: Path):
        (tmp_path / "x.db").write_bytes(b"this is not a database file" * 100)
        url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

        ok, _ = await ping_timed(create_engine(url))

        assert ok is False


class TestSqliteEngine:
    async def test_uses_wal_and_a_busy_timeout(self, tmp_path: Path):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
        try:
            async with engine.connect() as conn:
                mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
                busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        finally:
            await engine.dispose()

        assert (mode, busy) == ("wal", 5000)
