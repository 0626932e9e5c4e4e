"""Async engine and session factories tuned to fail fast, plus the readiness ping."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

from app.db.sqlite import SqliteConnector

PG_CONNECT_TIMEOUT_S = 3.0
PG_COMMAND_TIMEOUT_S = 30.0
SQLITE_BUSY_TIMEOUT_MS = 5000
PING_TIMEOUT_S = 2.0

# What "the database is unavailable" looks like. Driver errors raised while opening a
# connection are not wrapped by SQLAlchemy, so the drivers' own bases are listed too.
DB_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
)


SessionFactory = Callable[[], AsyncSession]
"""What the services take: an ``async_sessionmaker`` or any callable returning a session."""


def mask_url(url: str | URL) -> str:
    """Render a database URL with its password hidden, the only form that may be logged."""
    return make_url(url).render_as_string(hide_password=True)


def describe_target(session_factory: object) -> str:
    """Masked URL behind a sessionmaker, for log lines; "(unknown)" for other factories."""
    bind = getattr(session_factory, "kw", {}).get("bind")
    url = getattr(bind, "url", None)
    return mask_url(url) if url is not None else "(unknown)"


def create_engine(url: str, *, pooled: bool = True) -> AsyncEngine:
    """Build an AsyncEngine with per-dialect settings that keep a down database cheap.

    ``pooled=False`` opens a connection per use (NullPool): for one-shot work such as
    the Alembic migrations, whose event loop ends right after.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pooled)
    options = _postgres_options() if backend == "postgresql" else {"pool_pre_ping": True}
    if not pooled:
        options = {"poolclass": NullPool, "connect_args": connect_args(backend)}
    return _create_async_engine(parsed, **options)


def connect_args(backend: str) -> dict[str, Any]:
    """Driver arguments that bound waiting; also used by the Alembic environment."""
    if backend == "postgresql":
        return {"timeout": PG_CONNECT_TIMEOUT_S, "command_timeout": PG_COMMAND_TIMEOUT_S}
    if backend == "sqlite":
        return {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    return {}


def _postgres_options() -> dict[str, Any]:
    # A short connect timeout bounds how long a request or the stats writer waits on a
    # dead server; pre-ping drops connections the server closed while we were idle.
    return {
        "pool_size": 10,
        "max_overflow": 20,
        "pool_timeout": 10,
        "pool_recycle": 1800,
        "pool_pre_ping": True,
        "connect_args": connect_args("postgresql"),
    }


def _sqlite_engine(url: URL, pooled: bool) -> AsyncEngine:
    # The connector, not SQLAlchemy's default, opens connections: see SqliteConnector.
    connector = SqliteConnector(url, **connect_args("sqlite"))
    pool_options: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    engine = _create_async_engine(url, async_creator=connector, **pool_options)

    @event.listens_for(engine.sync_engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers proceed during the stats writer's upserts; busy_timeout makes
        # concurrent writers wait for the lock instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay readable after commit (no lazy reloads)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping(engine: AsyncEngine, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Return whether the database answers ``SELECT 1`` within ``timeout_s``; never raises."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except DB_ERRORS:
        return False
    return True
