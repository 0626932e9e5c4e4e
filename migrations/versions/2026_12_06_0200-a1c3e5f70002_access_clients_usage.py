"""Access control: client_keys, user_daily_usage, cost and per-user limits."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a1c3e5f70002"
down_revision: str | Sequence[str] | None = "9325c88d3bfb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("daily_budget_usd", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_client_keys_key_hash")),
    )
    op.create_index(op.f("ix_client_keys_user_id"), "client_keys", ["user_id"], unique=False)
    op.create_table(
        "user_daily_usage",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *[
            sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            for name in ("requests", "prompt_tokens", "completion_tokens")
        ],
        sa.Column("cost_usd", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name=op.f("pk_user_daily_usage")),
    )
    # A plain ADD COLUMN (both dialects have it): batch mode would reflect api_key_stats, whose
    # coalesce() expression index SQLite reflection cannot read.
    op.add_column(
        "api_key_stats",
        sa.Column("cost_usd", sa.Float(), server_default=sa.text("0"), nullable=False),
    )
    with op.batch_alter_table("user_profiles") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_budget_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 and Postgres): a batch "move and copy" would rebuild
    # api_key_stats without its expression index, which SQLite reflection cannot see.
    for table, column in (
        ("user_profiles", "daily_budget_usd"),
        ("user_profiles", "rpm"),
        ("api_key_stats", "cost_usd"),
    ):
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    op.drop_table("user_daily_usage")
    op.drop_index(op.f("ix_client_keys_user_id"), table_name="client_keys")
    op.drop_table("client_keys")
