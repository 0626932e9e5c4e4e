"""Database fixtures: every test runs once on SQLite and once on a throwaway Postgres database."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.migrate import upgrade
from app.db.session import DB_ERRORS, create_engine, create_sessionmaker, mask_url

# The server's maintenance database; each session creates its own database next to it.
PG_ADMIN_URL = os.environ.get(
    "KEYPOOL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
T = TypeVar("T")


def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` (Alembic, ``asyncio.run``) in a thread, clear of pytest-asyncio's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run_coro(coro: Coroutine[Any, Any, T]) -> T:
    return run_in_thread(asyncio.run, coro)


async def _admin_execute(*statements: str) -> None:
    engine = create_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def create_pg_database() -> str:
    """Create an empty database with a random name; returns its URL."""
    name = f"keypool_test_{secrets.token_hex(6)}"
    run_coro(_admin_execute(f'CREATE DATABASE "{name}"'))
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    run_coro(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_available() -> None:
    """Skip Postgres cases when no server answers, except on CI where that is a failure."""
    try:
        run_coro(_admin_execute("SELECT 1"))
    except DB_ERRORS as exc:
        reason = f"Postgres unreachable at {mask_url(PG_ADMIN_URL)}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


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
        url = f"sqlite+aiosqlite:///{tmp_path / 'keypool.db'}"
        run_in_thread(upgrade, url)
        return url
    url: str = request.getfixturevalue("migrated_pg_url")
    run_coro(_empty_tables(url))
    return url


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


def closed_port() -> int:
    """A local TCP port nothing listens on, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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
