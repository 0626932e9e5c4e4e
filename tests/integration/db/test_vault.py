"""The vault over a real database (SQLite and Postgres): storage, reloads, rotation, wrong keys."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import ApiKey, ProviderConfig
from app.db.models import ProviderKey
from app.db.vault import VaultRepository
from app.vault.crypto import VaultCipher
from app.vault.errors import WrongMasterKey
from app.vault.keys import VaultKeys
from app.vault.rotation import rotate_master, verify_master_key

SECRETS = ["sk-vault-aaaaaaaaaaaa0001", "sk-vault-bbbbbbbbbbbb0002", "sk-vault-cccccccccccc0003"]
GROQ = ProviderConfig(
    "groq", "http://127.0.0.1:1/v1", "m", (ApiKey("sk-env-000000000000000A", "groq:0:000A"),)
)


@pytest.fixture(autouse=True)
async def no_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session:  # the Postgres database is shared by the session
        await session.execute(delete(ProviderKey))
        await session.commit()


@pytest.fixture
def cipher() -> VaultCipher:
    return VaultCipher(os.urandom(32))


def vault_keys(sessions: async_sessionmaker[AsyncSession], cipher: VaultCipher, **kw) -> VaultKeys:
    return VaultKeys(sessions, cipher, [GROQ], **kw)


class TestStorage:
    async def test_keys_are_listed_in_creation_order_after_the_environment_keys(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        vault = vault_keys(sessionmaker, cipher)
        added = [await vault.add("groq", s) for s in SECRETS]
        assert added[0].id < added[1].id < added[2].id
        assert [k.secret for k in vault.keys("groq")] == [GROQ.keys[0].secret, *SECRETS]
        assert [k.fingerprint for k in vault.keys("groq")][1:] == [
            "groq:1:0001",
            "groq:2:0002",
            "groq:3:0003",
        ]
        assert (vault.source("groq", 0), vault.source("groq", 1)) == ("env", "vault")

    async def test_no_column_holds_key_text(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        cipher: VaultCipher,
    ):
        vault = vault_keys(sessionmaker, cipher)
        await vault.add("groq", SECRETS[0])
        await vault.replace_byok("alice", "groq", SECRETS[1])
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM provider_keys"))).all()
        dump = repr(rows).encode() + b"".join(
            bytes(v) for row in rows for v in row if isinstance(v, bytes | memoryview)
        )
        assert len(rows) == 2
        for secret in SECRETS[:2]:
            assert secret.encode() not in dump
            assert secret not in repr(rows)

    async def test_delete_moves_later_keys_down_and_tells_the_listener(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        changes: list[tuple[str, tuple[str, ...], tuple[int | None, ...]]] = []
        vault = vault_keys(
            sessionmaker,
            cipher,
            on_change=lambda p, keys, moves: changes.append(
                (p, tuple(k.fingerprint for k in keys), moves)
            ),
        )
        first, second, _ = [await vault.add("groq", s) for s in SECRETS]
        assert changes[-1][2] == (0, 1, 2, None)
        assert await vault.remove(second.id)
        assert changes[-1] == ("groq", ("groq:0:000A", "groq:1:0001", "groq:2:0003"), (0, 1, 3))
        assert vault.vault_key_at("groq", 1) == first
        assert not await vault.remove(second.id)


class TestOtherInstances:
    async def test_a_second_instance_sees_adds_and_deletes_on_refresh(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        here, there = vault_keys(sessionmaker, cipher), vault_keys(sessionmaker, cipher)
        await there.load()
        key = await here.add("groq", SECRETS[0])
        assert len(there.keys("groq")) == 1
        assert await there.refresh()
        assert [k.secret for k in there.keys("groq")][1:] == [SECRETS[0]]
        await here.remove(key.id)
        await there.refresh()
        assert len(there.keys("groq")) == 1


class TestBringYourOwnKey:
    async def test_a_users_key_is_theirs_only_and_never_in_the_shared_list(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        vault = vault_keys(sessionmaker, cipher)
        await vault.replace_byok("alice", "groq", SECRETS[0])
        await vault.replace_byok("alice", "groq", SECRETS[1])  # replaces the first
        assert [k.secret for k in vault.byok("alice", "groq")] == [SECRETS[1]]
        assert vault.byok("alice", "groq")[0].fingerprint == "groq:byok:0002"
        assert vault.byok("bob", "groq") == ()
        assert SECRETS[1] not in [k.secret for k in vault.keys("groq")]
        assert await vault.remove_byok("alice", "groq") == 1
        assert vault.byok("alice", "groq") == ()


class TestMasterKey:
    async def test_a_wrong_master_key_stops_the_load_with_one_line(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        cipher: VaultCipher,
    ):
        await vault_keys(sessionmaker, cipher).add("groq", SECRETS[0])
        wrong = VaultCipher(os.urandom(32))
        with pytest.raises(WrongMasterKey) as caught:
            await vault_keys(sessionmaker, wrong).load()
        assert "\n" not in str(caught.value)
        assert "1 of 1" in str(caught.value)
        import base64

        with pytest.raises(WrongMasterKey):
            await verify_master_key(engine, base64.b64encode(os.urandom(32)).decode())

    async def test_rotation_re_encrypts_every_row(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        vault = vault_keys(sessionmaker, cipher)
        for secret in SECRETS[:2]:
            await vault.add("groq", secret)
        await vault.replace_byok("alice", "groq", SECRETS[2])
        new = VaultCipher(os.urandom(32))
        result = await rotate_master(sessionmaker, cipher, new)
        assert (result.rows, result.already_rotated) == (3, False)
        reopened = vault_keys(sessionmaker, new)
        await reopened.load()
        assert [k.secret for k in reopened.keys("groq")][1:] == SECRETS[:2]
        assert [k.secret for k in reopened.byok("alice", "groq")] == [SECRETS[2]]
        with pytest.raises(WrongMasterKey):
            await vault_keys(sessionmaker, cipher).load()
        again = await rotate_master(sessionmaker, cipher, new)
        assert again.already_rotated

    async def test_an_interrupted_rotation_leaves_every_row_under_the_old_key(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        cipher: VaultCipher,
        monkeypatch: pytest.MonkeyPatch,
    ):
        vault = vault_keys(sessionmaker, cipher)
        for secret in SECRETS:
            await vault.add("groq", secret)
        written = 0
        original = VaultRepository.reseal

        async def reseal_then_die(self: VaultRepository, rows) -> None:
            nonlocal written
            await original(self, rows[:2])  # two rows rewritten inside the transaction...
            written = 2
            raise KeyboardInterrupt  # ...then the operator presses Ctrl-C

        monkeypatch.setattr(VaultRepository, "reseal", reseal_then_die)
        with pytest.raises(KeyboardInterrupt):
            await rotate_master(sessionmaker, cipher, VaultCipher(os.urandom(32)))
        assert written == 2
        survivor = vault_keys(sessionmaker, cipher)
        await survivor.load()
        assert [k.secret for k in survivor.keys("groq")][1:] == SECRETS

    async def test_rotation_with_the_wrong_old_key_changes_nothing(
        self, sessionmaker: async_sessionmaker[AsyncSession], cipher: VaultCipher
    ):
        await vault_keys(sessionmaker, cipher).add("groq", SECRETS[0])
        with pytest.raises(WrongMasterKey):
            await rotate_master(
                sessionmaker, VaultCipher(os.urandom(32)), VaultCipher(os.urandom(32))
            )
        await vault_keys(sessionmaker, cipher).load()
