"""Alembic environment: runs migrations over an async engine on SQLite or Postgres."""

from __future__ import annotations

import asyncio
import logging
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from app.db.models import Base
from app.db.session import create_engine, mask_url

DEFAULT_URL = "sqlite+aiosqlite:///./keypool.db"

config = context.config
log = logging.getLogger("alembic.env")

# app.db.migrate sets this to False: the running gateway owns logging, and fileConfig
# would otherwise disable every logger that already exists.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    """The URL given by the caller, else DATABASE_URL, else the local SQLite default."""
    # Passed as an attribute, not a main option: ini interpolation would break on a
    # "%" in a password.
    explicit = config.attributes.get("sqlalchemy.url") or config.get_main_option("sqlalchemy.url")
    return str(explicit or os.environ.get("DATABASE_URL") or DEFAULT_URL)


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = database_url()
    log.info("migrating %s", mask_url(url))
    # Bounded connect: a start-up migration against a dead database must fail fast,
    # not wait out the driver's 60-second default.
    engine = create_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
