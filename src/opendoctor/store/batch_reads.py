"""The two questions the scaled-out inspector asks about each batch of events, in one
statement: which of them were handled before, and which of their resources have an
active fault.

Asked apart, they were two statements per batch (a storm with its monitors' reports
brought 1,360 of one and 1,477 of the other to PostgreSQL, each a round trip and the
statement's whole cost). `EventStore.processed_among` and `FaultStore.active_ids_among`
both hand their keys to the one `BatchReads` of their database; asked together (the
inspector gathers them), they are read together: one `UNION ALL`.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, literal, null, or_, select, union_all

from opendoctor.infra.group_read import GroupRead
from opendoctor.store.db import Database, one_of
from opendoctor.store.tables import EventRow, FaultRow

Resource = tuple[str, str | None]  # (hostname, instance_id): a host's fault or a server's
EVENT, FAULT = "event", "fault"


class BatchReads:
    """One per database (`of`): concurrent askers share its queries."""

    _each: ClassVar[weakref.WeakKeyDictionary[Database, BatchReads]] = weakref.WeakKeyDictionary()

    def __init__(self, db: Database) -> None:
        self.db = db
        self._read: GroupRead[tuple[str, Any], str] = GroupRead(self._now)

    @classmethod
    def of(cls, db: Database) -> BatchReads:
        reads = cls._each.get(db)
        if reads is None:
            reads = cls._each[db] = cls(db)
        return reads

    async def processed_among(self, event_ids: Collection[str]) -> set[str]:
        found = await self._read.read([(EVENT, i) for i in event_ids])
        return {key[1] for key in found}

    async def active_ids_among(self, resources: Collection[Resource]) -> dict[Resource, str]:
        found = await self._read.read([(FAULT, r) for r in resources])
        return {key[1]: fault_id for key, fault_id in found.items()}

    async def _now(self, keys: set[tuple[str, Any]]) -> dict[tuple[str, Any], str]:
        event_ids = {k for kind, k in keys if kind == EVENT}
        wanted: set[Resource] = {k for kind, k in keys if kind == FAULT}
        parts: list[Any] = []  # selects of differing column types
        if event_ids:
            parts.append(
                select(literal(EVENT), EventRow.id, null(), null()).where(
                    one_of(self.db, EventRow.id, event_ids), EventRow.processed
                )
            )
        hosts = {h for h, i in wanted if i is None}
        servers = {i for _, i in wanted if i is not None}
        about: list[ColumnElement[bool]] = []
        if hosts:
            about.append(FaultRow.instance_id.is_(None) & one_of(self.db, FaultRow.hostname, hosts))
        if servers:
            about.append(one_of(self.db, FaultRow.instance_id, servers))
        if about:
            parts.append(
                select(literal(FAULT), FaultRow.id, FaultRow.hostname, FaultRow.instance_id).where(
                    FaultRow.status == "active", or_(*about)
                )
            )
        if not parts:
            return {}
        query: Any = parts[0] if len(parts) == 1 else union_all(parts[0], parts[1])
        found: dict[tuple[str, Any], str] = {}
        # A connection, not an ORM session: asked for every batch of the scaled-out bus.
        async with self.db.reads.connect() as conn:
            for kind, row_id, hostname, instance_id in await conn.execute(query):
                if kind == EVENT:
                    found[(EVENT, row_id)] = row_id
                elif (pair := (hostname, instance_id)) in wanted:
                    found.setdefault((FAULT, pair), row_id)
        return found
