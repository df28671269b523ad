"""flap damping: how often a fault's resource went down again, and until when it is held

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faults") as batch:
        batch.add_column(sa.Column("flaps", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("held_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faults") as batch:
        batch.drop_column("held_until")
        batch.drop_column("flaps")
