"""HA as a service: clusters, their nodes, their other parts and their history

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ha_clusters",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
    )
    op.create_index("ix_ha_clusters_project", "ha_clusters", ["project_id"])
    op.create_table(
        "ha_nodes",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.UniqueConstraint("cluster_id", "kind", "ref", name="uq_ha_nodes_member"),
    )
    op.create_index("ix_ha_nodes_cluster", "ha_nodes", ["cluster_id"])
    op.create_index("ix_ha_nodes_ref", "ha_nodes", ["kind", "ref"])
    op.create_table(
        "ha_parts",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
    )
    op.create_index("ix_ha_parts_cluster", "ha_parts", ["cluster_id", "kind"])
    op.create_table(
        "ha_history",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_ha_history_cluster", "ha_history", ["cluster_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_ha_history_cluster", table_name="ha_history")
    op.drop_table("ha_history")
    op.drop_index("ix_ha_parts_cluster", table_name="ha_parts")
    op.drop_table("ha_parts")
    op.drop_index("ix_ha_nodes_ref", table_name="ha_nodes")
    op.drop_index("ix_ha_nodes_cluster", table_name="ha_nodes")
    op.drop_table("ha_nodes")
    op.drop_index("ix_ha_clusters_project", table_name="ha_clusters")
    op.drop_table("ha_clusters")
