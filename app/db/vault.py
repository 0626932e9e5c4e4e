"""Repository of `provider_keys`: sealed rows only; sealing and opening happen in app.vault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ProviderKey


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One stored key as the database holds it (nonce and ciphertext, never key text)."""

    id: int
    provider: str
    user_id: str | None
    fingerprint: str
    nonce: bytes
    ciphertext: bytes
    created_at: datetime


def _row(model: ProviderKey) -> SealedRow:
    return SealedRow(
        model.id,
        model.provider,
        model.user_id,
        model.fingerprint,
        bytes(model.nonce),
        bytes(model.ciphertext),
        model.created_at,
    )


class VaultRepository:
    """Reads and writes `provider_keys`; never commits (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> Self:
        return cls(session)

    async def add(
        self,
        provider: str,
        fingerprint: str,
        nonce: bytes,
        ciphertext: bytes,
        *,
        user_id: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Insert one sealed key; returns its id, which stays the key's id for good."""
        row = ProviderKey(
            provider=provider,
            user_id=user_id,
            fingerprint=fingerprint,
            nonce=nonce,
            ciphertext=ciphertext,
            created_at=created_at or datetime.now(UTC),
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def list_all(self) -> list[SealedRow]:
        """Every row, shared and per-user, in creation order (ids only grow)."""
        stmt = select(ProviderKey).order_by(ProviderKey.id)
        return [_row(m) for m in (await self.session.scalars(stmt)).all()]

    async def list_shared(self, provider: str) -> list[SealedRow]:
        stmt = (
            select(ProviderKey)
            .where(ProviderKey.provider == provider, ProviderKey.user_id.is_(None))
            .order_by(ProviderKey.id)
        )
        return [_row(m) for m in (await self.session.scalars(stmt)).all()]

    async def list_user(self, user_id: str, provider: str | None = None) -> list[SealedRow]:
        stmt = select(ProviderKey).where(ProviderKey.user_id == user_id)
        if provider is not None:
            stmt = stmt.where(ProviderKey.provider == provider)
        return [_row(m) for m in (await self.session.scalars(stmt.order_by(ProviderKey.id))).all()]

    async def delete(self, key_id: int) -> bool:
        """Remove one row by id; False when there was none."""
        result = await self.session.execute(delete(ProviderKey).where(ProviderKey.id == key_id))
        return bool(getattr(result, "rowcount", 0))

    async def delete_user(self, user_id: str, provider: str) -> int:
        """Remove a user's own keys for one provider; returns how many there were."""
        stmt = delete(ProviderKey).where(
            ProviderKey.user_id == user_id, ProviderKey.provider == provider
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0))

    async def reseal(self, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Replace (id, nonce, ciphertext) of existing rows: the master-key rotation's write."""
        for key_id, nonce, ciphertext in rows:
            await self.session.execute(
                update(ProviderKey)
                .where(ProviderKey.id == key_id)
                .values(nonce=nonce, ciphertext=ciphertext)
            )
