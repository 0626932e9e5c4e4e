"""Create provider_keys (the encrypted key vault, shared and bring-your-own-key rows)."""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2d4f6a80003"
down_revision: str | Sequence[str] | None = "a1c3e5f70002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=16), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_keys")),
        sqlite_autoincrement=True,  # ids are never reused, so a key's id stays its own
    )
    op.create_index(op.f("ix_provider_keys_provider"), "provider_keys", ["provider"], unique=False)
    op.create_index(op.f("ix_provider_keys_user_id"), "provider_keys", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_keys_user_id"), table_name="provider_keys")
    op.drop_index(op.f("ix_provider_keys_provider"), table_name="provider_keys")
    op.drop_table("provider_keys")
