"""Throwaway databases for tests (SQLite files, Postgres databases) and direct reads of them."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import socket
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade
from app.db.repositories import KeyStatsRepository, UserRepository
from app.db.session import DB_ERRORS, create_engine, create_sessionmaker, mask_url

# The server's maintenance database; each test creates its own database next to it.
PG_ADMIN_URL = os.environ.get(
    "KEYPOOL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
DB_KINDS = ["sqlite", "postgres"]
T = TypeVar("T")


def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` (Alembic, ``asyncio.run``) in a thread, clear of any running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run_coro(coro: Coroutine[Any, Any, T]) -> T:
    result: T = run_in_thread(asyncio.run, coro)
    return result


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


@functools.cache
def _postgres_problem() -> str | None:
    try:
        run_coro(_admin_execute("SELECT 1"))
    except DB_ERRORS as exc:
        return f"Postgres unreachable at {mask_url(PG_ADMIN_URL)}: {type(exc).__name__}: {exc}"
    return None


def require_postgres() -> None:
    """Skip Postgres cases when no server answers, except on CI where that is a failure."""
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def pg_address() -> tuple[str, int]:
    url = make_url(PG_ADMIN_URL)
    return url.host or "127.0.0.1", url.port or 5432


@contextmanager
def throwaway_database(kind: str, tmp_path: Path, *, migrated: bool = False) -> Iterator[str]:
    """A new, empty database of ``kind``; the gateway migrates it itself at start-up."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / f'keypool-{secrets.token_hex(4)}.db'}"
        if migrated:
            run_in_thread(upgrade, url)
        yield url
        return
    require_postgres()
    url = create_pg_database()
    try:
        if migrated:
            run_in_thread(upgrade, url)
        yield url
    finally:
        drop_pg_database(url)


def closed_port() -> int:
    """A local TCP port nothing listens on, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# Direct reads, to check what the gateway wrote without going through it.

StatsRow = dict[str, Any]
STATS_COLUMNS = (
    "provider",
    "key_index",
    "key_fingerprint",
    "key_group",
    "total_requests",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "errors",
    "rate_limited",
    "last_request_at",
    "cost_usd",
)


async def _read(url: str, read: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await read(session)
    finally:
        await engine.dispose()


def stats_rows(url: str) -> list[StatsRow]:
    """Every ``api_key_stats`` row as a dict."""

    async def read(session: Any) -> list[StatsRow]:
        rows = await KeyStatsRepository.from_session(session).all()
        return [{name: getattr(r, name) for name in STATS_COLUMNS} for r in rows]

    return run_coro(_read(url, read))


def user_groups(url: str) -> dict[str, int]:
    """Stored group of every user."""

    async def read(session: Any) -> dict[str, int]:
        return dict(await UserRepository.from_session(session).list_for_rebalance())

    return run_coro(_read(url, read))
