"""Bearer tokens of the operations service (issue 14, item 3), and room for a token's
name as the actor of a campaign history event.

Adds ``api_tokens`` (name, role, SHA-256 of the secret, created/expires/revoked/last
used) and widens ``campaign_events.actor`` from 16 to 80 characters (``token:NAME``,
names up to 64). Downgrading drops the tokens and cuts actors back to 16 characters.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'admin')", name=op.f("ck_api_tokens_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("campaign_events") as batch:
        batch.alter_column("actor", existing_type=sa.String(length=16), type_=sa.String(length=80))


def downgrade() -> None:
    events = sa.table("campaign_events", sa.column("actor", sa.String()))
    op.execute(events.update().values(actor=sa.func.substr(events.c.actor, 1, 16)))
    with op.batch_alter_table("campaign_events") as batch:
        batch.alter_column("actor", existing_type=sa.String(length=80), type_=sa.String(length=16))
    op.drop_table("api_tokens")
