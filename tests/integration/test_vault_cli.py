"""`keypool vault rotate-master` and the start refusing a wrong master key, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ApiKey, ProviderConfig
from app.db.migrate import upgrade
from app.db.session import create_engine, create_sessionmaker
from app.vault.crypto import VaultCipher
from app.vault.keys import VaultKeys
from tests.support.databases import DB_KINDS, run_coro, run_in_thread, throwaway_database
from tests.support.redis_server import free_port
from tests.support.vault import new_master_key

SECRET = "sk-stored-in-vault-000000042"
ALPHA = ProviderConfig(
    "alpha", "http://127.0.0.1:9/v1", "m", (ApiKey("sk-env-0000000000001", "alpha:0:0001"),)
)


def store_one(url: str, master: str) -> None:
    async def add() -> None:
        engine = create_engine(url)
        try:
            vault = VaultKeys(create_sessionmaker(engine), VaultCipher.from_base64(master), [ALPHA])
            await vault.add("alpha", SECRET)
        finally:
            await engine.dispose()

    run_coro(add())


def secrets_under(url: str, master: str) -> list[str]:
    async def load() -> list[str]:
        engine = create_engine(url)
        try:
            vault = VaultKeys(create_sessionmaker(engine), VaultCipher.from_base64(master), [ALPHA])
            await vault.load()
            return [k.key.secret for k in vault.vault_keys("alpha")]
        finally:
            await engine.dispose()

    return run_coro(load())


def keypool(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEYS", "_API_KEY"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=tmp_path,  # no stray .env
        env=full,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(params=DB_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path):
    with throwaway_database(request.param, tmp_path) as url:
        run_in_thread(upgrade, url)
        yield url


class TestRotateMaster:
    def test_new_key_from_an_environment_variable(self, tmp_path: Path, database: str):
        old, new = new_master_key(), new_master_key()
        store_one(database, old)
        done = keypool(
            tmp_path,
            "vault",
            "rotate-master",
            "--new-key-env",
            "NEXT_KEY",
            DATABASE_URL=database,
            KEYPOOL_MASTER_KEY=old,
            NEXT_KEY=new,
        )
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 1 stored keys" in done.stdout
        assert old not in done.stdout + done.stderr
        assert new not in done.stdout + done.stderr
        assert secrets_under(database, new) == [SECRET]

    def test_new_key_from_stdin_and_a_second_run_is_harmless(self, tmp_path: Path, database: str):
        old, new = new_master_key(), new_master_key()
        store_one(database, old)
        for expected in ("re-encrypted 1", "already under the new master key"):
            done = keypool(
                tmp_path,
                "vault",
                "rotate-master",
                stdin=new + "\n",
                DATABASE_URL=database,
                KEYPOOL_MASTER_KEY=old,
            )
            assert done.returncode == 0, done.stderr
            assert expected in done.stdout
        assert secrets_under(database, new) == [SECRET]

    def test_a_wrong_old_key_is_one_line_and_changes_nothing(self, tmp_path: Path, database: str):
        old = new_master_key()
        store_one(database, old)
        done = keypool(
            tmp_path,
            "vault",
            "rotate-master",
            stdin=new_master_key() + "\n",
            DATABASE_URL=database,
            KEYPOOL_MASTER_KEY=new_master_key(),
        )
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0
        assert "does not decrypt 1 of 1" in done.stderr
        assert "Traceback" not in done.stderr
        assert secrets_under(database, old) == [SECRET]

    def test_a_malformed_new_key_is_refused(self, tmp_path: Path):
        done = keypool(
            tmp_path,
            "vault",
            "rotate-master",
            stdin="short\n",
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
            KEYPOOL_MASTER_KEY=new_master_key(),
        )
        assert done.returncode == 2
        assert "the new master key must be base64" in done.stderr


class TestStart:
    def test_a_wrong_master_key_stops_the_start_with_one_line(self, tmp_path: Path):
        url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
        run_in_thread(upgrade, url)
        store_one(url, new_master_key())
        done = keypool(
            tmp_path,
            "serve",
            "--port",
            str(free_port()),
            DATABASE_URL=url,
            KEYPOOL_MASTER_KEY=new_master_key(),
            ALPHA_API_KEYS="sk-env-0000000000001",
            ALPHA_BASE_URL="http://127.0.0.1:9/v1",
            ALPHA_DEFAULT_MODEL="m",
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(
            "keypool: configuration error: KEYPOOL_MASTER_KEY does not decrypt"
        )


def test_a_wrong_master_key_stops_uvicorn_with_one_line(tmp_path: Path):
    """`uvicorn app.main:app` builds the app inside its own loop: the check must hold there too."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    run_in_thread(upgrade, url)
    store_one(url, new_master_key())
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEYS", "_API_KEY"))}
    env.update(
        DATABASE_URL=url,
        KEYPOOL_MASTER_KEY=new_master_key(),
        ALPHA_API_KEYS="sk-env-0000000000001",
        ALPHA_BASE_URL="http://127.0.0.1:9/v1",
        ALPHA_DEFAULT_MODEL="m",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("keypool: configuration error: KEYPOOL_MASTER_KEY does not decrypt")
