"""A UUID per campaign (archive paths unique forever); what a replica's last
verification saw (stage-in verifies a replica once per modification).

Existing campaigns get a fresh UUID each; their archived files and run names keep the
paths they were written under (the campaign's ``summary`` lists them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uuid", sa.String(length=36), nullable=True))
    campaigns = sa.table("campaigns", sa.column("id", sa.Integer), sa.column("uuid", sa.String))
    connection = op.get_bind()
    for (campaign_id,) in connection.execute(sa.select(campaigns.c.id)).all():
        connection.execute(
            campaigns.update().where(campaigns.c.id == campaign_id).values(uuid=str(uuid.uuid4()))
        )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.alter_column("uuid", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_index("ix_campaigns_uuid", ["uuid"], unique=True)

    with op.batch_alter_table("bb_replica", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verified_mtime_ns", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("verified_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bb_replica", schema=None) as batch_op:
        batch_op.drop_column("verified_size")
        batch_op.drop_column("verified_mtime_ns")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_uuid")
        batch_op.drop_column("uuid")
