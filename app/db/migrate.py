"""Run the Alembic migrations from code: the CLI, the app's start-up and the tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

# Resolved from this file, not the working directory, so `keypool db upgrade` works from
# anywhere. Assumes a source checkout or editable install (migrations/ is not packaged).
REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
SCRIPT_LOCATION = REPO_ROOT / "migrations"


def alembic_config(url: str) -> Config:
    """Alembic config pointing at this repository's scripts and at ``url``."""
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("path_separator", "os")
    # The URL travels as an attribute: set_main_option would interpolate a "%" in it.
    cfg.attributes["sqlalchemy.url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def _refuse_inside_event_loop(name: str) -> None:
    # env.py drives the async engine with asyncio.run(), which cannot nest in a running loop.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() blocks; inside an event loop use `await upgrade_async(url)`")


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (blocking)."""
    _refuse_inside_event_loop("upgrade")
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (blocking)."""
    _refuse_inside_event_loop("downgrade")
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Migrate from inside a running loop: Alembic gets its own thread and event loop."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
