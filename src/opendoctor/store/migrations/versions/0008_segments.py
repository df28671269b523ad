"""failover segments, their hosts, and Masakari notifications

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("recovery_method", sa.String(length=32), nullable=False),
        sa.Column("service_type", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("all_servers", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("name", name="uq_segments_name"),
    )
    op.create_table(
        "segment_hosts",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("segment_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("service_type", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("control_attributes", sa.Text(), nullable=False),
        sa.Column("reserved", sa.Boolean(), nullable=False),
        sa.Column("on_maintenance", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("name", "service_type", name="uq_segment_hosts_name"),
    )
    op.create_index("ix_segment_hosts_segment", "segment_hosts", ["segment_id"])
    op.create_table(
        "ha_notifications",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("generated_time", sa.Float(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_host_uuid", sa.String(length=36), nullable=False),
        sa.Column("failover_segment_uuid", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
    )
    op.create_index(
        "ix_ha_notifications_host", "ha_notifications", ["hostname", "type", "generated_time"]
    )
    op.create_index("ix_ha_notifications_status", "ha_notifications", ["status"])


def downgrade() -> None:
    op.drop_index("ix_ha_notifications_status", table_name="ha_notifications")
    op.drop_index("ix_ha_notifications_host", table_name="ha_notifications")
    op.drop_table("ha_notifications")
    op.drop_index("ix_segment_hosts_segment", table_name="segment_hosts")
    op.drop_table("segment_hosts")
    op.drop_table("segments")
