"""Database fixtures: every test runs once on SQLite and once on a throwaway Postgres database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.migrate import upgrade
from app.db.session import create_engine, create_sessionmaker
from tests.support.databases import (
    closed_port,
    create_pg_database,
    drop_pg_database,
    require_postgres,
    run_coro,
    run_in_thread,
)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    """Skip Postgres cases when no server answers, except on CI where that is a failure."""
    require_postgres()


@pytest.fixture(scope="session")
def migrated_pg_url(postgres_available: None) -> Iterator[str]:
    """One migrated database per test session; tests empty its tables first."""
    url = create_pg_database()
    try:
        run_in_thread(upgrade, url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (for migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("postgres_available")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each dialect."""
    if request.param == "sqlite":
        sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'keypool.db'}"
        run_in_thread(upgrade, sqlite_url)
        return sqlite_url
    pg_url: str = request.getfixturevalue("migrated_pg_url")
    run_coro(_empty_tables(pg_url))
    return pg_url


async def _empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE user_profiles, api_key_stats RESTART IDENTITY"))
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


def unreachable_url(db_url: str, tmp_path: Path) -> str:
    """A URL of the same dialect as ``db_url`` whose database cannot be used."""
    if db_url.startswith("sqlite"):
        # A corrupt file rather than a missing one: aiosqlite's failed-open cleanup can
        # outlive the test's event loop and trip pytest's unhandled-thread check.
        corrupt = tmp_path / "corrupt.db"
        corrupt.write_bytes(b"not a database" * 100)
        return f"sqlite+aiosqlite:///{corrupt}"
    return f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere"


class SwitchableSessions:
    """A session factory that can be pointed at a dead database and back.

    Stands in for a database outage with real connection failures from the driver.
    """

    def __init__(self, up: async_sessionmaker[AsyncSession], down_url: str) -> None:
        self.up_factory = up
        self.down_engine = create_engine(down_url)
        self.down_factory = create_sessionmaker(self.down_engine)
        self.down = False

    def __call__(self) -> AsyncSession:
        return (self.down_factory if self.down else self.up_factory)()

    async def dispose(self) -> None:
        await self.down_engine.dispose()


@pytest.fixture
async def switchable(
    sessionmaker: async_sessionmaker[AsyncSession], db_url: str, tmp_path: Path
) -> AsyncIterator[SwitchableSessions]:
    sessions = SwitchableSessions(sessionmaker, unreachable_url(db_url, tmp_path))
    yield sessions
    await sessions.dispose()
