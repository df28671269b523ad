"""The notification outbox: every notification is a row until its consumer has it."""

from __future__ import annotations

from typing import Any, cast

import orjson
from sqlalchemy import Table, func, select, update

from opendoctor.core.notifications import PENDING, OutboxEntry
from opendoctor.store.bulk import insert_rows, update_rows
from opendoctor.store.db import Database
from opendoctor.store.paging import after_marker
from opendoctor.store.tables import OutboxRow

OUTBOX = cast(Table, OutboxRow.__table__)


def _stored(entry: OutboxEntry) -> dict[str, Any]:
    """An entry's row, its body as the JSON text that is sent (`payload`), encoded once."""
    row = entry.row()
    row["body"] = (entry.payload or orjson.dumps(entry.body)).decode()
    return row


def _entry(row: OutboxRow) -> OutboxEntry:
    return OutboxEntry(
        id=row.id,
        alarm_id=row.alarm_id,
        url=row.url,
        body=dict(row.body),
        created=row.created,
        fault_id=row.fault_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt=row.next_attempt,
        last_error=row.last_error,
        delivered=row.delivered,
    )


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, entries: list[OutboxEntry]) -> None:
        """Insert new entries; ids already present (a replayed event) are left as they are,
        and of one id given twice (the same event notified twice at once, both written
        together) the first is kept. One statement, whatever the number of faults the
        entries come from (the notifier hands over several at once)."""
        if not entries:
            return
        rows = list({e.id: _stored(e) for e in reversed(entries)}.values())
        async with self.db.engine.begin() as conn:
            await insert_rows(conn, OUTBOX, rows, skip_conflicts_on="id")

    async def existing(self, ids: list[str]) -> set[str]:
        """The ids among `ids` that the outbox holds already."""
        if not ids:
            return set()
        query = select(OutboxRow.id).where(OutboxRow.id.in_(ids))
        async with self.db.sessions() as session:
            return set(await session.scalars(query))

    async def record_attempts(self, entries: list[OutboxEntry]) -> None:
        """Write back status, attempts, timing and error of entries after delivery attempts."""
        rows = [
            {
                "id": e.id,
                "status": e.status,
                "attempts": e.attempts,
                "next_attempt": e.next_attempt,
                "last_error": e.last_error,
                "delivered": e.delivered,
            }
            for e in entries
        ]
        if rows:
            async with self.db.engine.begin() as conn:
                await update_rows(conn, OUTBOX, "id", rows)

    async def claim_due(self, now: float, until: float, limit: int = 500) -> list[OutboxEntry]:
        """Take the pending entries due by `now` for this process, up to `until`.

        Taking one moves its next attempt to `until` in the same statement, so that the
        other processes on the database leave it alone while this one tries it (rows
        another is taking are skipped, not waited for). If this process dies meanwhile,
        the entry is due again at `until`, for any process: delivery stays at least once.
        """
        due = (
            select(OutboxRow.id)
            .where(OutboxRow.status == PENDING, OutboxRow.next_attempt <= now)
            .order_by(OutboxRow.next_attempt)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(OutboxRow)
            .where(OutboxRow.id.in_(due), OutboxRow.next_attempt <= now)
            .values(next_attempt=until)
            .returning(OutboxRow)
        )
        async with self.db.sessions.begin() as session:
            rows = (await session.scalars(stmt)).all()
            return sorted((_entry(r) for r in rows), key=lambda e: e.created)

    async def first_delivered(self, fault_ids: list[str]) -> dict[str, float]:
        """fault id -> when the last of its notifications delivered at the first attempt
        arrived (the fault's T09, as the notifier saw it)."""
        query = (
            select(OutboxRow.fault_id, func.max(OutboxRow.delivered))
            .where(
                OutboxRow.fault_id.in_(fault_ids),
                OutboxRow.attempts == 1,
                OutboxRow.delivered.is_not(None),
            )
            .group_by(OutboxRow.fault_id)
        )
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return {r[0]: r[1] for r in rows if r[0] is not None and r[1] is not None}

    async def next_due(self) -> float | None:
        query = select(OutboxRow.next_attempt).where(OutboxRow.status == PENDING)
        query = query.order_by(OutboxRow.next_attempt).limit(1)
        async with self.db.sessions() as session:
            return await session.scalar(query)

    async def list(
        self,
        fault_id: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        marker: str | None = None,
    ) -> list[OutboxEntry]:
        """Oldest first; after `marker` (an entry id), the page that follows it."""
        # A batch shares its `created`: the id breaks ties alike on every engine.
        query = select(OutboxRow).order_by(OutboxRow.created, OutboxRow.id).limit(limit)
        if fault_id is not None:
            query = query.where(OutboxRow.fault_id == fault_id)
        if status is not None:
            query = query.where(OutboxRow.status == status)
        async with self.db.sessions() as session:
            query = await after_marker(
                session, query, OutboxRow.id, OutboxRow.created, marker, descending=False
            )
            return [_entry(r) for r in await session.scalars(query)]
