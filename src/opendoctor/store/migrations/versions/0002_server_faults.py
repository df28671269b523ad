"""server faults: the instance a fault is about, and the signals that hold it

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faults") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("signals", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("faults") as batch:
        batch.drop_column("signals")
        batch.drop_column("instance_id")
