"""Master-key checks and rotation: the start-up check and `keypool vault rotate-master`.

Rotation reads every row, opens it with the old key, seals it again with the new key and a fresh
nonce, and writes all rows in ONE transaction: an interruption at any point leaves every row
under the old key, and running the command again is always safe.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.session import DB_ERRORS, SessionFactory, create_engine, create_sessionmaker
from app.db.vault import SealedRow, VaultRepository
from app.vault.crypto import CannotDecrypt, Sealed, VaultCipher
from app.vault.errors import WrongMasterKey, wrong_master_key

logger = logging.getLogger("keypool.vault")


@dataclass(frozen=True, slots=True)
class Rotation:
    rows: int
    already_rotated: bool = False


def _opens(cipher: VaultCipher, row: SealedRow) -> str | None:
    try:
        return cipher.open(
            Sealed(row.nonce, row.ciphertext), row.provider, row.fingerprint, row.user_id
        )
    except CannotDecrypt:
        return None


async def rotate_master(sessions: SessionFactory, old: VaultCipher, new: VaultCipher) -> Rotation:
    """Re-encrypt every row from `old` to `new` in one transaction (all rows or none)."""
    async with sessions() as session:
        repo = VaultRepository.from_session(session)
        rows = await repo.list_all()
        opened = [_opens(old, row) for row in rows]
        nothing_opens = rows and all(secret is None for secret in opened)
        if nothing_opens and all(_opens(new, row) is not None for row in rows):
            return Rotation(len(rows), already_rotated=True)
        failed = sum(1 for secret in opened if secret is None)
        if failed:
            raise WrongMasterKey(
                f"KEYPOOL_MASTER_KEY does not decrypt {failed} of {len(rows)} stored provider "
                "keys; nothing was changed"
            )
        resealed = []
        for row, secret in zip(rows, opened, strict=True):
            assert secret is not None
            sealed = new.seal(secret, row.provider, row.fingerprint, row.user_id)
            resealed.append((row.id, sealed.nonce, sealed.ciphertext))
        await repo.reseal(resealed)
        await session.commit()
    return Rotation(len(rows))


async def count_unreadable(sessions: SessionFactory, cipher: VaultCipher | None) -> tuple[int, int]:
    """(rows this key cannot open, all rows); without a key every row counts as unreadable."""
    async with sessions() as session:
        rows = await VaultRepository.from_session(session).list_all()
    if cipher is None:
        return len(rows), len(rows)
    return sum(1 for row in rows if _opens(cipher, row) is None), len(rows)


async def verify_master_key(engine: AsyncEngine, master_key: str | None) -> None:
    """Refuse a master key that does not open the stored rows (WrongMasterKey, one clear line).

    A database that is down or not yet migrated cannot be checked: that is logged and passed
    (the gateway serves without its database); VaultKeys.load() checks again when it loads.
    """
    sessions = create_sessionmaker(engine)
    try:
        if master_key is None:
            _, total = await count_unreadable(sessions, None)
            if total:
                logger.warning(
                    "%d stored provider keys are not served: KEYPOOL_MASTER_KEY is not set", total
                )
            return
        bad, total = await count_unreadable(sessions, VaultCipher.from_base64(master_key))
    except DB_ERRORS as exc:
        logger.info("vault not checked at start (%s)", type(exc).__name__)
        return
    if bad:
        raise wrong_master_key(bad, total)


def verify_master_key_sync(database_url: str, master_key: str | None) -> None:
    """The same check for a process that has no event loop yet (`keypool serve`)."""

    async def check() -> None:
        engine = create_engine(database_url, pooled=False)
        try:
            await verify_master_key(engine, master_key)
        finally:
            await engine.dispose()

    asyncio.run(check())


async def rotate_master_with_url(database_url: str, old_key: str, new_key: str) -> Rotation:
    """`keypool vault rotate-master`: its own short-lived engine."""
    engine = create_engine(database_url, pooled=False)
    try:
        return await rotate_master(
            create_sessionmaker(engine),
            VaultCipher.from_base64(old_key),
            VaultCipher.from_base64(new_key),
        )
    finally:
        await engine.dispose()
