"""Alembic migrations go up, down and up again on SQLite and Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from app.db.migrate import REPO_ROOT, downgrade, upgrade, upgrade_async
from app.db.models import Base
from app.db.session import create_engine
from tests.support.databases import run_in_thread

TABLES = {"user_profiles", "api_key_stats", "provider_keys", "client_keys", "user_daily_usage"}
DIALECTS = pytest.mark.parametrize("empty_db_url", ["sqlite", "postgres"], indirect=True)


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


async def column_names(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names: set[str] = await conn.run_sync(
                lambda c: {str(col["name"]) for col in inspect(c).get_columns(table)}
            )
    finally:
        await engine.dispose()
    return names


async def schema_diff(url: str) -> list[object]:
    def compare(conn: Connection) -> list[object]:
        with warnings.catch_warnings():
            # Expression indexes are neither reflected nor compared; both libraries warn.
            warnings.filterwarnings("ignore", message=".*expression-based index")
            warnings.filterwarnings("ignore", message=".*functional index")
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


@DIALECTS
class TestMigrations:
    async def test_upgrade_creates_tables_and_downgrade_removes_them(self, empty_db_url: str):
        await upgrade_async(empty_db_url)
        assert await table_names(empty_db_url) == TABLES

        run_in_thread(downgrade, empty_db_url)
        assert await table_names(empty_db_url) == set()

        await upgrade_async(empty_db_url)
        assert await table_names(empty_db_url) == TABLES

    async def test_models_match_the_migrated_schema(self, empty_db_url: str):
        await upgrade_async(empty_db_url)

        assert await schema_diff(empty_db_url) == []

    async def test_access_step_goes_down_and_up_again(self, empty_db_url: str):
        await upgrade_async(empty_db_url)

        run_in_thread(downgrade, empty_db_url, "9325c88d3bfb")
        assert await table_names(empty_db_url) == {"user_profiles", "api_key_stats"}
        assert "cost_usd" not in await column_names(empty_db_url, "api_key_stats")
        assert "rpm" not in await column_names(empty_db_url, "user_profiles")

        await upgrade_async(empty_db_url)
        assert await table_names(empty_db_url) == TABLES
        assert "cost_usd" in await column_names(empty_db_url, "api_key_stats")
        assert await schema_diff(empty_db_url) == []

    async def test_upgrade_is_idempotent(self, empty_db_url: str):
        await upgrade_async(empty_db_url)
        await upgrade_async(empty_db_url)

        assert await table_names(empty_db_url) == TABLES


class TestMigrateEntryPoints:
    def test_sync_upgrade_works_from_another_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.chdir(tmp_path)
        url = f"sqlite+aiosqlite:///{tmp_path / 'cwd.db'}"

        upgrade(url)
        downgrade(url)
        upgrade(url)

        assert (tmp_path / "cwd.db").exists()

    async def test_sync_upgrade_refuses_to_block_a_running_loop(self, tmp_path: Path):
        with pytest.raises(RuntimeError, match="upgrade_async"):
            upgrade(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")

    def test_alembic_cli_uses_database_url(self, tmp_path: Path):
        db = tmp_path / "cli.db"
        env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(REPO_ROOT / "alembic.ini"),
                "upgrade",
                "head",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

        assert result.returncode == 0, result.stderr
        assert db.exists()
