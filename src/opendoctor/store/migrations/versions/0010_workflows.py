"""workflow definitions, executions, task executions and action executions

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.UniqueConstraint(
            "name", "namespace", "project_id", "builtin", name="uq_workflow_definitions_name"
        ),
    )
    op.create_index("ix_workflow_definitions_created", "workflow_definitions", ["created_at"])
    op.create_table(
        "workflow_executions",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("workflow_name", sa.String(length=255), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_namespace", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_info", sa.Text(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("privileged", sa.Boolean(), nullable=False),
        sa.Column("task_execution_id", sa.String(length=36), nullable=True),
        sa.Column("root_execution_id", sa.String(length=36), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_workflow_executions_state", "workflow_executions", ["state", "owner"])
    op.create_index("ix_workflow_executions_parent", "workflow_executions", ["task_execution_id"])
    op.create_table(
        "task_executions",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("workflow_name", sa.String(length=255), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_info", sa.Text(), nullable=True),
        sa.Column("in_context", sa.JSON(), nullable=False),
        sa.Column("published", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("runtime_context", sa.JSON(), nullable=False),
        sa.Column("processed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_task_executions_execution", "task_executions", ["execution_id"])
    op.create_table(
        "action_executions",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("task_execution_id", sa.String(length=36), nullable=True),
        sa.Column("execution_id", sa.String(length=36), nullable=True),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("workflow_name", sa.String(length=255), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_info", sa.Text(), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_action_executions_task", "action_executions", ["task_execution_id"])
    op.create_index("ix_action_executions_execution", "action_executions", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_action_executions_execution", table_name="action_executions")
    op.drop_index("ix_action_executions_task", table_name="action_executions")
    op.drop_table("action_executions")
    op.drop_index("ix_task_executions_execution", table_name="task_executions")
    op.drop_table("task_executions")
    op.drop_index("ix_workflow_executions_parent", table_name="workflow_executions")
    op.drop_index("ix_workflow_executions_state", table_name="workflow_executions")
    op.drop_table("workflow_executions")
    op.drop_index("ix_workflow_definitions_created", table_name="workflow_definitions")
    op.drop_table("workflow_definitions")
