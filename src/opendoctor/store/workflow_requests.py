"""States asked of executions through a process that does not run them (an API replica
that got `PUT /v2/executions/{id}`): kept until the execution's own engine takes them."""

from __future__ import annotations

import time
from typing import cast

from sqlalchemy import Table, delete, select

from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.tables import WorkflowExecutionRow, WorkflowRequestRow

REQUESTS = cast(Table, WorkflowRequestRow.__table__)
EXECUTIONS = cast(Table, WorkflowExecutionRow.__table__)


class RequestStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def request_state(self, execution_id: str, state: str, info: str | None) -> None:
        """Ask for `state`; a later request replaces one not yet taken."""
        now = time.time()
        row = {"execution_id": execution_id, "state": state, "info": info, "created_at": now}
        stmt = dialect_insert(self.db, WorkflowRequestRow).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["execution_id"],
            set_={"state": state, "info": info, "created_at": now},
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)

    async def requests_for(self, owner: str) -> list[tuple[str, str, str | None]]:
        """(execution id, state, info) asked of the executions `owner` runs."""
        query = (
            select(REQUESTS.c.execution_id, REQUESTS.c.state, REQUESTS.c.info)
            .join(EXECUTIONS, EXECUTIONS.c.id == REQUESTS.c.execution_id)
            .where(EXECUTIONS.c.owner == owner)
            .order_by(REQUESTS.c.created_at)
        )
        async with self.db.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in await conn.execute(query)]

    async def drop_request(self, execution_id: str, state: str) -> None:
        """The request taken (only if it is still that one: a newer one stays)."""
        stmt = delete(REQUESTS).where(
            REQUESTS.c.execution_id == execution_id, REQUESTS.c.state == state
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)
