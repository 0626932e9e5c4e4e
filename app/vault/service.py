"""The admin operations on run-time keys: add, delete, and users' own keys (bring your own key).

Indices follow the pool's rule (environment keys, then vault keys in creation order). Entries are
the health view's key entries plus `source` and, for vault keys, their stable `id`; the health
view's entry function comes from the caller (the api room owns it; this room may not import api).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from app.config import ProviderConfig
from app.db.session import DB_ERRORS
from app.errors import DatabaseUnavailable, UnknownKey
from app.keys.model import KeyStatus
from app.providers.transport import Transport
from app.state.base import KeyStateStore
from app.timefmt import iso_utc
from app.vault.errors import DuplicateKey, KeyFromEnvironment, VaultDisabled
from app.vault.keys import VaultKeys
from app.vault.layout import VaultKey
from app.vault.validation import require_valid_key

KeyEntry = Callable[[ProviderConfig, int, KeyStatus, float], dict[str, Any]]
"""The health view's `providers[].keys[]` item for (provider, index, status, now)."""


@contextmanager
def _database(outcome: str) -> Iterator[None]:
    """A database outage during an admin write is a 503, not an internal error."""
    try:
        yield
    except DB_ERRORS as exc:
        raise DatabaseUnavailable(f"database unavailable; {outcome}") from exc


def byok_entry(key: VaultKey) -> dict[str, Any]:
    """A user's own key as admins see it: fingerprint only."""
    return {
        "id": key.id,
        "user_id": key.user_id,
        "provider": key.provider,
        "fingerprint": key.key.fingerprint,
        "source": "byok",
        "created_at": iso_utc(key.created_at.timestamp()),
    }


def source_fields(vault: VaultKeys | None, provider: str, index: int) -> dict[str, Any]:
    """What a health key entry gains: `source`, and the stable `id` of a vault key."""
    key = vault.vault_key_at(provider, index) if vault is not None else None
    return {"source": "env"} if key is None else {"source": "vault", "id": key.id}


class VaultAdmin:
    """Built per admin request from the runtime's parts; `vault` None means the vault is off."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        vault: VaultKeys | None,
        transport: Transport,
        store: KeyStateStore,
        key_entry: KeyEntry,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.vault = vault
        self.transport = transport
        self.store = store
        self.key_entry = key_entry

    def provider(self, name: str) -> ProviderConfig:
        config = self.providers.get(name.lower())
        if config is None:
            raise UnknownKey(f"no provider {name!r}", details={"provider": name})
        return config

    def require_vault(self) -> VaultKeys:
        if self.vault is None:
            raise VaultDisabled("the key vault is off: set KEYPOOL_MASTER_KEY to enable it")
        return self.vault

    async def add(self, provider: str, secret: str, validate: bool = True) -> dict[str, Any]:
        config = self.provider(provider)
        vault = self.require_vault()
        if vault.serves(config.name, secret):
            raise DuplicateKey(
                f"this key is already served for {config.name}", details={"provider": config.name}
            )
        if validate:
            await require_valid_key(config, secret, self.transport)
        with _database("the key was not stored"):
            added = await vault.add(config.name, secret)
        ids = [k.id for k in vault.vault_keys(config.name)]
        return await self.entry(config.name, len(config.keys) + ids.index(added.id))

    async def delete(self, provider: str, key_index: int) -> dict[str, Any]:
        config = self.provider(provider)
        if 0 <= key_index < len(config.keys):
            raise KeyFromEnvironment(
                f"key {key_index} of {config.name} comes from the environment; remove it there",
                details={"provider": config.name, "key_index": key_index},
            )
        vault = self.vault
        key = vault.vault_key_at(config.name, key_index) if vault is not None else None
        if vault is None or key is None:
            # A path index can be any size; one past 64 bits cannot go into the JSON answer.
            shown = key_index if abs(key_index) < 2**53 else None
            raise UnknownKey(
                f"no key {shown if shown is not None else 'with that index'} "
                f"for provider {config.name!r}",
                details={"provider": config.name, "key_index": shown},
            )
        entry = await self.entry(config.name, key_index)
        with _database("the key was not deleted"):
            await vault.remove(key.id)
        return {**entry, "deleted": True}

    async def put_byok(
        self, user_id: str, provider: str, secret: str, validate: bool = True
    ) -> dict[str, Any]:
        config = self.provider(provider)
        vault = self.require_vault()
        if vault.serves(config.name, secret):
            raise DuplicateKey(
                f"this key is in the shared pool of {config.name}",
                details={"provider": config.name},
            )
        if validate:
            await require_valid_key(config, secret, self.transport)
        with _database("the key was not stored"):
            return byok_entry(await vault.replace_byok(user_id, config.name, secret))

    async def delete_byok(self, user_id: str, provider: str) -> dict[str, Any]:
        config = self.provider(provider)
        vault = self.require_vault()
        entries = vault.byok_entries(user_id, config.name)
        if not entries:
            raise UnknownKey(
                f"user {user_id!r} has no own key for {config.name}",
                details={"provider": config.name, "user_id": user_id},
            )
        with _database("the key was not deleted"):
            await vault.remove_byok(user_id, config.name)
        return {**byok_entry(entries[0]), "deleted": True}

    async def entry(self, provider: str, index: int) -> dict[str, Any]:
        """The health-view entry of one key, with `source` (and `id` for a vault key).

        The state comes from the key state store when the live pool already has this index;
        a key the pool does not know yet is reported fresh (active, no requests).
        """
        config = self.providers[provider]
        vault = self.vault
        merged = vault.with_vault_keys(config) if vault is not None else config
        now = time.time()
        snapshot = await self.store.snapshot(provider, now)
        status = snapshot.keys[index] if index < len(snapshot.keys) else KeyStatus()
        entry = self.key_entry(merged, index, status, now)
        return {**entry, **source_fields(vault, provider, index)}
