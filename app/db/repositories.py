"""Repositories: every SQL statement of the gateway, none of which commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Insert, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import STATS_CONFLICT_KEY, ApiKeyStats, UserProfile

# Keeps each statement's bind-parameter count far below SQLite's and asyncpg's limits.
CHUNK = 500

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user assignment waiting to be stored."""

    user_id: str
    api_key_group: int
    created_at: datetime
    tier: str = "free"


@dataclass(frozen=True, slots=True)
class StatsDelta:
    """Counter increments for one (provider, key_index, key_group) row."""

    provider: str
    key_index: int
    key_fingerprint: str
    key_group: int | None
    total_requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    rate_limited: int
    last_request_at: datetime | None
    cost_usd: float = 0.0

    def sort_key(self) -> tuple[str, int, int]:
        """Order that matches the unique index, so concurrent upserts lock rows alike."""
        return (self.provider, self.key_index, self.key_group or 0)


@dataclass(frozen=True, slots=True)
class GroupStatsRow:
    """Users and usage of one key group."""

    key_group: int
    user_count: int
    total_requests: int
    total_tokens: int
    last_request_at: datetime | None


def _dialect_insert(session: AsyncSession, model: type[Any]) -> Any:
    """Return the dialect's INSERT, the one that has ``on_conflict_*``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"upserts are not implemented for dialect {name!r}")


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class UserRepository:
    """Reads and writes ``user_profiles``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> Self:
        return cls(session)

    async def get(self, user_id: str) -> UserProfile | None:
        return await self.session.get(UserProfile, user_id)

    async def groups_of(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Stored group of each of ``user_ids`` that has a row."""
        ids = sorted(set(user_ids))
        found: dict[str, int] = {}
        for part in _chunks(ids):
            stmt = select(UserProfile.user_id, UserProfile.api_key_group).where(
                UserProfile.user_id.in_(part)
            )
            found.update((await self.session.execute(stmt)).tuples().all())
        return found

    async def insert_if_absent(self, users: Sequence[NewUser]) -> None:
        """Insert users; a row that already exists (another instance won) is left alone."""
        # Sorted so two instances inserting overlapping batches wait on rows in one order.
        ordered = sorted(users, key=lambda u: u.user_id)
        for part in _chunks(ordered):
            values = [
                {
                    "user_id": u.user_id,
                    "api_key_group": u.api_key_group,
                    "tier": u.tier,
                    "created_at": u.created_at,
                }
                for u in part
            ]
            stmt = _dialect_insert(self.session, UserProfile).values(values)
            await self.session.execute(stmt.on_conflict_do_nothing(index_elements=["user_id"]))

    async def group_sizes(self) -> dict[int, int]:
        """Number of users per stored group (groups without users are absent)."""
        stmt = select(UserProfile.api_key_group, func.count()).group_by(UserProfile.api_key_group)
        return {grp: int(n) for grp, n in (await self.session.execute(stmt)).tuples()}

    async def recent_groups(self, limit: int) -> list[tuple[str, int]]:
        """(user_id, group) of the `limit` most recently created users, newest first."""
        stmt = (
            select(UserProfile.user_id, UserProfile.api_key_group)
            .order_by(UserProfile.created_at.desc(), UserProfile.user_id)
            .limit(limit)
        )
        return [(uid, grp) for uid, grp in (await self.session.execute(stmt)).tuples()]

    async def list_for_rebalance(self) -> list[tuple[str, int]]:
        """Every (user_id, group), oldest first: earlier users keep their group first."""
        stmt = select(UserProfile.user_id, UserProfile.api_key_group).order_by(
            UserProfile.created_at, UserProfile.user_id
        )
        return [(uid, grp) for uid, grp in (await self.session.execute(stmt)).tuples()]

    async def update_groups(self, groups: Mapping[str, int]) -> None:
        """Set ``api_key_group`` for each user id (bulk UPDATE by primary key)."""
        rows = [{"user_id": uid, "api_key_group": grp} for uid, grp in sorted(groups.items())]
        for part in _chunks(rows):
            await self.session.execute(update(UserProfile), list(part))


class KeyStatsRepository:
    """Reads and atomically increments ``api_key_stats``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> Self:
        return cls(session)

    async def upsert_batch(self, rows: Sequence[StatsDelta]) -> None:
        """Add each delta to its row, creating the row on first use."""
        ordered = sorted(_merge_same_row(rows), key=StatsDelta.sort_key)
        for part in _chunks(ordered):
            await self.session.execute(self._upsert_statement([_delta_values(r) for r in part]))

    def _upsert_statement(self, values: list[dict[str, Any]]) -> Insert:
        stmt = _dialect_insert(self.session, ApiKeyStats).values(values)
        table, new = ApiKeyStats.__table__.c, stmt.excluded
        counters = ("total_requests", "total_tokens", "prompt_tokens", "completion_tokens")
        summed = {
            name: table[name] + new[name]
            for name in (*counters, "errors", "rate_limited", "cost_usd")
        }
        upsert: Insert = stmt.on_conflict_do_update(
            index_elements=list(STATS_CONFLICT_KEY),
            set_={
                **summed,
                "key_fingerprint": new.key_fingerprint,
                "last_request_at": _later(table.last_request_at, new.last_request_at),
            },
        )
        return upsert

    async def all(self) -> list[ApiKeyStats]:
        stmt = select(ApiKeyStats).order_by(
            ApiKeyStats.provider, ApiKeyStats.key_index, ApiKeyStats.key_group
        )
        return list((await self.session.scalars(stmt)).all())

    async def group_stats(self, groups: int) -> list[GroupStatsRow]:
        """One row per group 1..``groups``, zeros (and no time) where nothing happened."""
        in_range = UserProfile.api_key_group.between(1, groups)
        users_stmt = (
            select(UserProfile.api_key_group, func.count())
            .where(in_range)
            .group_by(UserProfile.api_key_group)
        )
        users = {grp: int(n) for grp, n in (await self.session.execute(users_stmt)).tuples()}
        usage_stmt = (
            select(
                ApiKeyStats.key_group,
                func.sum(ApiKeyStats.total_requests),
                func.sum(ApiKeyStats.total_tokens),
                func.max(ApiKeyStats.last_request_at),
            )
            .where(ApiKeyStats.key_group.between(1, groups))
            .group_by(ApiKeyStats.key_group)
        )
        usage = {row[0]: row[1:] for row in (await self.session.execute(usage_stmt)).tuples()}
        return [_group_row(g, users.get(g, 0), usage.get(g)) for g in range(1, groups + 1)]


def _later(current: ColumnElement[Any], new: ColumnElement[Any]) -> ColumnElement[Any]:
    # Portable max() that ignores NULL: SQLite's two-argument max() returns NULL if either is.
    return case(
        (new.is_(None), current),
        (current.is_(None), new),
        (new > current, new),
        else_=current,
    )


def _merge_same_row(rows: Sequence[StatsDelta]) -> list[StatsDelta]:
    # Postgres refuses an INSERT ... ON CONFLICT that touches one row twice, and group 0
    # shares the NULL group's index entry, so such deltas are added up first.
    merged: dict[tuple[str, int, int], StatsDelta] = {}
    for row in rows:
        prev = merged.get(row.sort_key())
        merged[row.sort_key()] = row if prev is None else _add(prev, row)
    return list(merged.values())


def _add(a: StatsDelta, b: StatsDelta) -> StatsDelta:
    times = [t for t in (a.last_request_at, b.last_request_at) if t is not None]
    return replace(
        b,
        total_requests=a.total_requests + b.total_requests,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        errors=a.errors + b.errors,
        rate_limited=a.rate_limited + b.rate_limited,
        last_request_at=max(times) if times else None,
        cost_usd=a.cost_usd + b.cost_usd,
    )


def _delta_values(row: StatsDelta) -> dict[str, Any]:
    return {
        "provider": row.provider,
        "key_index": row.key_index,
        "key_fingerprint": row.key_fingerprint,
        "key_group": row.key_group,
        "total_requests": row.total_requests,
        "total_tokens": row.prompt_tokens + row.completion_tokens,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "errors": row.errors,
        "rate_limited": row.rate_limited,
        "last_request_at": row.last_request_at,
        "cost_usd": row.cost_usd,
    }


def _group_row(group: int, users: int, usage: tuple[Any, ...] | None) -> GroupStatsRow:
    requests, tokens, last = usage if usage is not None else (0, 0, None)
    return GroupStatsRow(
        key_group=group,
        user_count=users,
        total_requests=int(requests or 0),
        total_tokens=int(tokens or 0),
        last_request_at=last,
    )
