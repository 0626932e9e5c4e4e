"""VaultKeys: the opened vault rows in memory, reloaded from the database every VAULT_REFRESH_S.

Each instance polls; a change made here is applied here at once (the admin call reloads before it
answers), and other instances see it within one refresh period. A row this master key cannot open
stops the start (`load`) and, later, is skipped with an error log line (`refresh`): it is never
served and never silently dropped from view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from app.config import ApiKey, ProviderConfig
from app.db.session import DB_ERRORS, SessionFactory
from app.db.vault import SealedRow, VaultRepository
from app.vault.crypto import CannotDecrypt, Sealed, VaultCipher
from app.vault.errors import wrong_master_key
from app.vault.layout import (
    VaultKey,
    byok_fingerprint,
    identities,
    moved_from,
    positioned,
    tail_of,
)

logger = logging.getLogger("keypool.vault")

ChangeListener = Callable[[str, tuple[ApiKey, ...], tuple[int | None, ...]], None]
"""`on_change(provider, keys, moved_from)`: `keys` is the provider's whole list now (environment
keys, then vault keys), `moved_from[i]` the old index of the key now at i (None: new key)."""

ByokListener = Callable[[str, str, tuple[ApiKey, ...]], None]
"""`on_byok_change(user_id, provider, keys)`: that user's own keys for that provider now."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    shared: dict[str, tuple[VaultKey, ...]]
    byok: dict[tuple[str, str], tuple[VaultKey, ...]]


class VaultKeys:
    """Run-time keys per provider, and users' own keys; reads are plain dict look-ups."""

    def __init__(
        self,
        sessions: SessionFactory,
        cipher: VaultCipher,
        providers: Sequence[ProviderConfig],
        *,
        refresh_s: float = 10.0,
        on_change: ChangeListener | None = None,
        on_byok_change: ByokListener | None = None,
    ) -> None:
        self.sessions = sessions
        self.cipher = cipher
        self.providers = {p.name: p for p in providers}
        self.refresh_s = refresh_s
        self.on_change = on_change
        self.on_byok_change = on_byok_change
        self._opened: dict[int, VaultKey] = {}
        self._unreadable: set[int] = set()
        self._view = _Snapshot({}, {})
        self._lock = asyncio.Lock()
        self._db_down = False

    # Reads (hot path safe: no I/O).

    def vault_keys(self, provider: str) -> tuple[VaultKey, ...]:
        return self._view.shared.get(provider, ())

    def keys(self, provider: str) -> tuple[ApiKey, ...]:
        """The provider's whole list: environment keys, then vault keys, fingerprinted by index."""
        config = self.providers[provider]
        return config.keys + positioned(provider, len(config.keys), self.vault_keys(provider))

    def with_vault_keys(self, config: ProviderConfig) -> ProviderConfig:
        """`config` with its vault keys appended (what a pool and its clients should serve)."""
        keys = self.keys(config.name)
        weights = config.key_weights + (1.0,) * (len(keys) - len(config.key_weights))
        return replace(config, keys=keys, key_weights=weights[: len(keys)])

    def source(self, provider: str, index: int) -> Literal["env", "vault"]:
        return "env" if index < len(self.providers[provider].keys) else "vault"

    def vault_key_at(self, provider: str, index: int) -> VaultKey | None:
        """The vault key at this index (None: an environment key or out of range)."""
        position = index - len(self.providers[provider].keys)
        keys = self.vault_keys(provider)
        return keys[position] if 0 <= position < len(keys) else None

    def byok(self, user_id: str, provider: str) -> tuple[ApiKey, ...]:
        """That user's own keys for that provider (empty: the user has none, use the pool)."""
        return tuple(k.key for k in self._view.byok.get((user_id, provider), ()))

    def byok_entries(self, user_id: str, provider: str) -> tuple[VaultKey, ...]:
        return self._view.byok.get((user_id, provider), ())

    def serves(self, provider: str, secret: str) -> bool:
        """Whether this exact key is already in the provider's shared list."""
        return any(k.secret == secret for k in self.keys(provider))

    # Loading.

    async def load(self) -> None:
        """The start-up load: a row this master key cannot open raises WrongMasterKey."""
        async with self._lock:
            rows = await self._read_rows()
            unreadable = [r for r in rows if self._open(r, log=False) is None]
            if unreadable:
                raise wrong_master_key(len(unreadable), len(rows))
            self._publish(rows)

    async def refresh(self) -> bool:
        """Reload from the database; False (state kept, logged once) when it is unreachable."""
        async with self._lock:
            try:
                rows = await self._read_rows()
            except DB_ERRORS as exc:
                if not self._db_down:
                    logger.warning(
                        "vault refresh failed (%s); serving the keys already loaded",
                        type(exc).__name__,
                    )
                self._db_down = True
                return False
            if self._db_down:
                logger.info("vault refresh works again")
            self._db_down = False
            self._publish(rows)
            return True

    async def run(self) -> None:
        """Poll forever (a background task; cancel it to stop)."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep polling whatever one round hit
                logger.warning("vault refresh failed: %s", type(exc).__name__)

    # Writes (admin paths): each commits, then reloads, so the answer reflects the new state.

    async def add(self, provider: str, secret: str, user_id: str | None = None) -> VaultKey:
        tail = tail_of(secret)
        sealed = self.cipher.seal(secret, provider, tail, user_id)
        async with self.sessions() as session:
            repo = VaultRepository.from_session(session)
            key_id = await repo.add(
                provider, tail, sealed.nonce, sealed.ciphertext, user_id=user_id
            )
            await session.commit()
        return await self._reload_with(key_id)

    async def remove(self, key_id: int) -> bool:
        async with self.sessions() as session:
            removed = await VaultRepository.from_session(session).delete(key_id)
            await session.commit()
        await self.refresh()
        return removed

    async def replace_byok(self, user_id: str, provider: str, secret: str) -> VaultKey:
        """A user's own key for a provider: this one replaces any earlier one (one transaction)."""
        tail = tail_of(secret)
        sealed = self.cipher.seal(secret, provider, tail, user_id)
        async with self.sessions() as session:
            repo = VaultRepository.from_session(session)
            await repo.delete_user(user_id, provider)
            key_id = await repo.add(
                provider, tail, sealed.nonce, sealed.ciphertext, user_id=user_id
            )
            await session.commit()
        return await self._reload_with(key_id)

    async def remove_byok(self, user_id: str, provider: str) -> int:
        async with self.sessions() as session:
            removed = await VaultRepository.from_session(session).delete_user(user_id, provider)
            await session.commit()
        await self.refresh()
        return removed

    # Internals.

    async def _reload_with(self, key_id: int) -> VaultKey:
        """Reload after a write; the database must answer, since the caller reports the result."""
        async with self._lock:
            self._publish(await self._read_rows())
        return self._opened[key_id]

    async def _read_rows(self) -> list[SealedRow]:
        async with self.sessions() as session:
            return await VaultRepository.from_session(session).list_all()

    def _open(self, row: SealedRow, *, log: bool = True) -> VaultKey | None:
        known = self._opened.get(row.id)
        if known is not None and known.nonce == row.nonce:
            return known
        try:
            secret = self.cipher.open(
                Sealed(row.nonce, row.ciphertext), row.provider, row.fingerprint, row.user_id
            )
        except CannotDecrypt:
            if log and row.id not in self._unreadable:
                logger.error(
                    "vault row %d (%s:%s) does not decrypt with this KEYPOOL_MASTER_KEY; "
                    "not served",
                    row.id,
                    row.provider,
                    row.fingerprint,
                )
            if log:
                self._unreadable.add(row.id)
            return None
        fp = byok_fingerprint(row.provider, row.fingerprint) if row.user_id else ""
        key = VaultKey(
            row.id,
            row.provider,
            row.user_id,
            row.fingerprint,
            ApiKey(secret, fp),
            row.created_at,
            row.nonce,
        )
        self._opened[row.id] = key
        return key

    def _publish(self, rows: Sequence[SealedRow]) -> None:
        shared: dict[str, list[VaultKey]] = {}
        byok: dict[tuple[str, str], list[VaultKey]] = {}
        for row in rows:
            key = self._open(row)
            if key is None or row.provider not in self.providers:
                continue
            if row.user_id is None:
                shared.setdefault(row.provider, []).append(key)
            else:
                byok.setdefault((row.user_id, row.provider), []).append(key)
        live = {row.id for row in rows}
        self._opened = {i: k for i, k in self._opened.items() if i in live}
        before = self._view
        self._view = _Snapshot(
            {p: tuple(ks) for p, ks in shared.items()}, {u: tuple(ks) for u, ks in byok.items()}
        )
        self._notify(before)

    def _notify(self, before: _Snapshot) -> None:
        if self.on_change is not None:
            for name, config in self.providers.items():
                old = [k.id for k in before.shared.get(name, ())]
                new = [k.id for k in self._view.shared.get(name, ())]
                if old != new:
                    env = len(config.keys)
                    moves = moved_from(identities(env, old), identities(env, new))
                    self.on_change(name, self.keys(name), moves)
        if self.on_byok_change is not None:
            for pair in before.byok.keys() | self._view.byok.keys():
                old = [k.id for k in before.byok.get(pair, ())]
                if old != [k.id for k in self._view.byok.get(pair, ())]:
                    self.on_byok_change(pair[0], pair[1], self.byok(*pair))
