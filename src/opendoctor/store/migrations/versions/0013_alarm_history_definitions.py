"""a partial index of the alarm history's definition changes (all but state transitions)
by time, for the take-up of other processes' alarm changes before each fault

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# As `opendoctor.store.tables.NOT_STATE_TRANSITION` when this was written.
_WHERE = "type <> 'state transition'"


def upgrade() -> None:
    op.create_index(
        "ix_alarm_history_definitions",
        "alarm_history",
        ["timestamp"],
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_alarm_history_definitions", table_name="alarm_history")
