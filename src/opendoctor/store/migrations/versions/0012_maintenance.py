"""planned-maintenance sessions and owners' constraints on instances and groups

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_sessions",
        sa.Column("session_id", sa.String(length=36), primary_key=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
    )
    op.create_index("ix_maintenance_sessions_state", "maintenance_sessions", ["state"])
    op.create_index("ix_maintenance_sessions_created", "maintenance_sessions", ["created"])
    op.create_table(
        "maintenance_instance_groups",
        sa.Column("group_id", sa.String(length=255), primary_key=True),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_maintenance_instance_groups_project", "maintenance_instance_groups", ["project_id"]
    )
    op.create_table(
        "maintenance_instances",
        sa.Column("instance_id", sa.String(length=255), primary_key=True),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=True),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
    )
    op.create_index("ix_maintenance_instances_project", "maintenance_instances", ["project_id"])
    op.create_index("ix_maintenance_instances_group", "maintenance_instances", ["group_id"])


def downgrade() -> None:
    op.drop_index("ix_maintenance_instances_group", table_name="maintenance_instances")
    op.drop_index("ix_maintenance_instances_project", table_name="maintenance_instances")
    op.drop_table("maintenance_instances")
    op.drop_index(
        "ix_maintenance_instance_groups_project", table_name="maintenance_instance_groups"
    )
    op.drop_table("maintenance_instance_groups")
    op.drop_index("ix_maintenance_sessions_created", table_name="maintenance_sessions")
    op.drop_index("ix_maintenance_sessions_state", table_name="maintenance_sessions")
    op.drop_table("maintenance_sessions")
