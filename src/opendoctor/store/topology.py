"""Changes to the entity graph made through the API, kept in order so that every
inspector (and each after a restart) applies the same ones."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select

from opendoctor.store.db import Database
from opendoctor.store.tables import TopologyChangeRow

Change = tuple[int, str, dict[str, Any]]  # (seq, "add" | "remove", body)


class TopologyChangeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, op: str, body: dict[str, Any]) -> int:
        """Keep one change; returns its place in the order."""
        stmt = insert(TopologyChangeRow).values(at=time.time(), op=op, body=body)
        async with self.db.sessions.begin() as session:
            result = await session.execute(stmt.returning(TopologyChangeRow.seq))
            return int(result.scalar_one())

    async def since(self, seq: int, limit: int = 10_000) -> list[Change]:
        """The changes after `seq`, in order."""
        query = (
            select(TopologyChangeRow.seq, TopologyChangeRow.op, TopologyChangeRow.body)
            .where(TopologyChangeRow.seq > seq)
            .order_by(TopologyChangeRow.seq)
            .limit(limit)
        )
        async with self.db.sessions() as session:
            return [(s, o, dict(b)) for s, o, b in (await session.execute(query)).all()]
