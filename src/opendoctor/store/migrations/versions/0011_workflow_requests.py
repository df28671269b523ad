"""states asked of workflow executions through another process

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_requests",
        sa.Column("execution_id", sa.String(length=36), primary_key=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workflow_requests")
