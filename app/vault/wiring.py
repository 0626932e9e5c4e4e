"""Building the vault for a gateway process (called from the lifespan / build_runtime)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.session import DB_ERRORS, create_sessionmaker
from app.vault.crypto import VaultCipher
from app.vault.keys import ByokListener, ChangeListener, VaultKeys
from app.vault.rotation import verify_master_key

logger = logging.getLogger("keypool.vault")


async def open_vault(
    settings: Settings,
    engine: AsyncEngine,
    *,
    on_change: ChangeListener | None = None,
    on_byok_change: ByokListener | None = None,
) -> VaultKeys | None:
    """The loaded VaultKeys, or None when KEYPOOL_MASTER_KEY is unset (vault off).

    Raises WrongMasterKey (a ConfigError: print its message as one line and exit non-zero) when
    the master key does not open the stored rows. A database that is down at start leaves the
    vault empty; its refresh loop (`VaultKeys.run`) loads the keys once the database is back.
    """
    master = settings.keypool_master_key
    if master is None:
        await verify_master_key(engine, None)  # only warns about rows nobody can serve
        return None
    vault = VaultKeys(
        create_sessionmaker(engine),
        VaultCipher.from_base64(master.get_secret_value()),
        settings.providers,
        refresh_s=settings.vault_refresh_s,
        on_change=on_change,
        on_byok_change=on_byok_change,
    )
    try:
        await vault.load()
    except DB_ERRORS as exc:
        logger.warning(
            "vault not loaded at start (%s); retrying every %gs",
            type(exc).__name__,
            settings.vault_refresh_s,
        )
    return vault
