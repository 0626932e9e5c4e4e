"""Create user_profiles and api_key_stats."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9325c88d3bfb"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_profiles",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("api_key_group", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=32), server_default="free", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_profiles")),
    )
    op.create_index(
        op.f("ix_user_profiles_api_key_group"), "user_profiles", ["api_key_group"], unique=False
    )
    op.create_table(
        "api_key_stats",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("key_index", sa.Integer(), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("key_group", sa.Integer(), nullable=True),
        *[
            sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            for name in (
                "total_requests",
                "total_tokens",
                "prompt_tokens",
                "completion_tokens",
                "errors",
                "rate_limited",
            )
        ],
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key_stats")),
    )
    op.create_index(
        op.f("ix_api_key_stats_key_group"), "api_key_stats", ["key_group"], unique=False
    )
    # coalesce() so that the NULL group (requests without a user) is unique too.
    op.create_index(
        "uq_api_key_stats_provider_key_index_group",
        "api_key_stats",
        ["provider", "key_index", sa.text("coalesce(key_group, 0)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_api_key_stats_provider_key_index_group", table_name="api_key_stats")
    op.drop_index(op.f("ix_api_key_stats_key_group"), table_name="api_key_stats")
    op.drop_table("api_key_stats")
    op.drop_index(op.f("ix_user_profiles_api_key_group"), table_name="user_profiles")
    op.drop_table("user_profiles")
