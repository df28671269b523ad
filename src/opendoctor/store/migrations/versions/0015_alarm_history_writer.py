"""which process wrote each alarm history row, so that a process taking up the others'
alarm changes no longer reads back its own

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before stay without a writer: every process takes them up.
    with op.batch_alter_table("alarm_history") as batch:
        batch.add_column(sa.Column("writer", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarm_history") as batch:
        batch.drop_column("writer")
