"""SQLAlchemy table models for user key groups and per-key usage counters."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no BIGINT rowid alias: only "INTEGER PRIMARY KEY" auto-increments there.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no zone, so values are normalised to UTC before binding (which
    also keeps its fixed-width text form ordered) and tagged UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base whose constraint names are stable across dialects."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserProfile(Base):
    """A gateway user and the key group its requests try first."""

    __tablename__ = "user_profiles"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    api_key_group: Mapped[int] = mapped_column(Integer, index=True)
    tier: Mapped[str] = mapped_column(String(32), default="free", server_default="free")
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=text("CURRENT_TIMESTAMP")
    )
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKeyStats(Base):
    """Usage counters for one (provider, key_index, key_group); a NULL group is its own row."""

    __tablename__ = "api_key_stats"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    key_index: Mapped[int] = mapped_column(Integer)
    key_fingerprint: Mapped[str] = mapped_column(String(128))
    key_group: Mapped[int | None] = mapped_column(Integer, index=True)
    total_requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    errors: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    last_request_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


# coalesce() makes the NULL group collide with itself, which a plain unique constraint
# would not; both dialects accept this expression index as an ON CONFLICT target.
STATS_CONFLICT_KEY = (
    ApiKeyStats.provider,
    ApiKeyStats.key_index,
    # A literal 0, not a bound parameter: SQLite matches ON CONFLICT targets textually.
    func.coalesce(ApiKeyStats.key_group, literal_column("0")),
)
Index("uq_api_key_stats_provider_key_index_group", *STATS_CONFLICT_KEY, unique=True)


class ProviderKey(Base):
    """A provider key added at run time, AES-256-GCM sealed; no column holds key text.

    `user_id` NULL: a key of the shared pool. Set: that user's own key (bring your own key),
    which is never served to anyone else. `fingerprint` is the key's last 4 characters (a short
    hash for short keys): position-free, so deleting an earlier key does not change it.
    """

    __tablename__ = "provider_keys"
    # AUTOINCREMENT on SQLite too: a deleted key's id is never handed to a later key.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[bytes] = mapped_column(LargeBinary(16))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=text("CURRENT_TIMESTAMP")
    )


class ClientKeyRow(Base):
    """A client key (stored as its SHA-256 only) and the user it speaks for."""

    __tablename__ = "client_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    tier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=text("CURRENT_TIMESTAMP")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UserDailyUsage(Base):
    """Requests, tokens and cost of one user on one UTC day; upserted in batches."""

    __tablename__ = "user_daily_usage"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
