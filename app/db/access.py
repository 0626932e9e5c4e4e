"""Repositories for access control: client keys, per-user limits and daily usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ClientKeyRow, UserDailyUsage, UserProfile
from app.db.repositories import _dialect_insert

UNSET: Any = object()  # "not given", as opposed to None ("back to the tier's")


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A stored client key (never the key itself). `tier` None follows the user's tier."""

    id: int
    key_hash: str
    key_prefix: str
    user_id: str
    tier: str | None
    name: str | None
    rpm: int | None
    daily_budget_usd: float | None
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def revoked(self, at: datetime) -> ClientKey:
        return replace(self, revoked_at=at)


@dataclass(frozen=True, slots=True)
class UserLimits:
    """An admin's per-user settings (`PATCH /api/admin/users/{id}`); None = the tier's value."""

    tier: str | None = None
    rpm: int | None = None
    daily_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class DailyUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, other: DailyUsage) -> DailyUsage:
        return DailyUsage(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )


def _key(row: ClientKeyRow) -> ClientKey:
    return ClientKey(
        id=row.id,
        key_hash=row.key_hash,
        key_prefix=row.key_prefix,
        user_id=row.user_id,
        tier=row.tier,
        name=row.name,
        rpm=row.rpm,
        daily_budget_usd=row.daily_budget_usd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class ClientKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self,
        *,
        key_hash: str,
        key_prefix: str,
        user_id: str,
        tier: str | None,
        name: str | None,
        rpm: int | None,
        daily_budget_usd: float | None,
        created_at: datetime,
    ) -> ClientKey:
        row = ClientKeyRow(
            key_hash=key_hash,
            key_prefix=key_prefix,
            user_id=user_id,
            tier=tier,
            name=name,
            rpm=rpm,
            daily_budget_usd=daily_budget_usd,
            created_at=created_at,
        )
        self.session.add(row)
        await self.session.flush()
        return _key(row)

    async def list(self) -> list[ClientKey]:
        rows = await self.session.scalars(select(ClientKeyRow).order_by(ClientKeyRow.id))
        return [_key(row) for row in rows]

    async def get(self, key_id: int) -> ClientKey | None:
        row = await self.session.get(ClientKeyRow, key_id)
        return _key(row) if row is not None else None

    async def revoke(self, key_id: int, at: datetime) -> ClientKey | None:
        row = await self.session.get(ClientKeyRow, key_id)
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = at
            await self.session.flush()
        return _key(row)

    async def touch(self, last_used: Mapping[int, datetime]) -> None:
        for key_id, at in sorted(last_used.items()):
            await self.session.execute(
                update(ClientKeyRow).where(ClientKeyRow.id == key_id).values(last_used_at=at)
            )


class UserLimitsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def customised(self, default_tier: str) -> dict[str, UserLimits]:
        """Users whose tier or limits differ from the defaults (the only ones worth caching)."""
        rows = await self.session.execute(
            select(
                UserProfile.user_id, UserProfile.tier, UserProfile.rpm, UserProfile.daily_budget_usd
            ).where(
                (UserProfile.tier != default_tier)
                | UserProfile.rpm.is_not(None)
                | UserProfile.daily_budget_usd.is_not(None)
            )
        )
        return {r.user_id: UserLimits(r.tier, r.rpm, r.daily_budget_usd) for r in rows}

    async def get(self, user_id: str) -> UserLimits | None:
        row = await self.session.get(UserProfile, user_id)
        return None if row is None else UserLimits(row.tier, row.rpm, row.daily_budget_usd)

    async def patch(
        self,
        user_id: str,
        *,
        tier: str | None = UNSET,
        rpm: int | None = UNSET,
        daily_budget_usd: float | None = UNSET,
    ) -> UserLimits | None:
        row = await self.session.get(UserProfile, user_id)
        if row is None:
            return None
        if tier is not UNSET and tier is not None:
            row.tier = tier
        if rpm is not UNSET:
            row.rpm = rpm
        if daily_budget_usd is not UNSET:
            row.daily_budget_usd = daily_budget_usd
        await self.session.flush()
        return UserLimits(row.tier, row.rpm, row.daily_budget_usd)


class DailyUsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, day: date, deltas: Mapping[str, DailyUsage]) -> None:
        """Add increments to (user, day) rows, creating them; users in sorted order (no deadlocks)."""
        if not deltas:
            return
        values = [
            {
                "user_id": user_id,
                "day": day,
                "requests": d.requests,
                "prompt_tokens": d.prompt_tokens,
                "completion_tokens": d.completion_tokens,
                "cost_usd": d.cost_usd,
            }
            for user_id, d in sorted(deltas.items())
        ]
        stmt = _dialect_insert(self.session, UserDailyUsage).values(values)
        table = UserDailyUsage.__table__.c
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["user_id", "day"],
                set_={
                    name: table[name] + stmt.excluded[name]
                    for name in ("requests", "prompt_tokens", "completion_tokens", "cost_usd")
                },
            )
        )

    async def of_day(
        self, day: date, user_ids: Sequence[str] | None = None
    ) -> dict[str, DailyUsage]:
        query = select(UserDailyUsage).where(UserDailyUsage.day == day)
        if user_ids is not None:
            query = query.where(UserDailyUsage.user_id.in_(user_ids))
        rows = await self.session.scalars(query)
        return {
            r.user_id: DailyUsage(r.requests, r.prompt_tokens, r.completion_tokens, r.cost_usd)
            for r in rows
        }

    async def total_cost(self, day: date) -> dict[str, float]:
        rows = await self.session.execute(
            select(UserDailyUsage.user_id, func.sum(UserDailyUsage.cost_usd))
            .where(UserDailyUsage.day == day)
            .group_by(UserDailyUsage.user_id)
        )
        return {user_id: float(cost or 0.0) for user_id, cost in rows.tuples()}
