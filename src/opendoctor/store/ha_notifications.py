"""Masakari notifications (`core.segments.HaNotification`) in the database."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import RowMapping

from opendoctor.core.query import Order
from opendoctor.core.segments import SETTLED_STATUSES, HaNotification
from opendoctor.store.db import Database
from opendoctor.store.paging import UnknownMarker, after_row
from opendoctor.store.query_sql import ordering, sort_keys
from opendoctor.store.tables import EventRow, HaNotificationRow

NOTIFICATIONS = cast(Table, HaNotificationRow.__table__)
COLUMNS = {c.name: c for c in NOTIFICATIONS.c}
EVENTS = cast(Table, EventRow.__table__)
DEFAULT_ORDER: Order = [("created_at", True)]  # newest first, as Masakari


def _notification(row: RowMapping) -> HaNotification:
    return HaNotification(
        type=row["type"],
        hostname=row["hostname"],
        generated_time=row["generated_time"],
        payload=dict(row["payload"]),
        status=row["status"],
        source_host_uuid=row["source_host_uuid"],
        failover_segment_uuid=row["failover_segment_uuid"],
        event_id=row["event_id"],
        message=row["message"],
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class HaNotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, note: HaNotification) -> None:
        values = {
            "id": note.id,
            "type": note.type,
            "hostname": note.hostname,
            "generated_time": note.generated_time,
            "payload": dict(note.payload),
            "status": note.status,
            "source_host_uuid": note.source_host_uuid,
            "failover_segment_uuid": note.failover_segment_uuid,
            "event_id": note.event_id,
            "message": note.message,
            "created_at": note.created_at,
            "updated_at": note.updated_at,
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(NOTIFICATIONS).values(values))

    async def withdraw(self, note_id: str) -> None:
        """Take back a notification whose request failed after it was written."""
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(NOTIFICATIONS).where(NOTIFICATIONS.c.id == note_id))

    async def get(self, note_id: str) -> HaNotification | None:
        query = select(NOTIFICATIONS).where(NOTIFICATIONS.c.id == note_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _notification(row)

    async def notifications(
        self,
        filters: Mapping[str, Any] | None = None,
        generated_since: float | None = None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[HaNotification]:
        """Notifications whose columns equal `filters` and generated at or after
        `generated_since`, newest first unless `order` says otherwise, after the one
        whose id is `marker` (`UnknownMarker` if these filters do not hold it)."""
        keys = sort_keys(order or DEFAULT_ORDER, COLUMNS, "id")
        conditions = [COLUMNS[name] == value for name, value in (filters or {}).items()]
        if generated_since is not None:
            conditions.append(NOTIFICATIONS.c.generated_time >= generated_since)
        async with self.db.engine.connect() as conn:
            if marker is not None:
                at = select(*(k for k, _ in keys)).where(*conditions, NOTIFICATIONS.c.id == marker)
                values = (await conn.execute(at)).first()
                if values is None:
                    raise UnknownMarker(marker)
                conditions.append(after_row(keys, tuple(values)))
            query = select(NOTIFICATIONS).where(*conditions).order_by(*ordering(keys))
            if limit is not None:
                query = query.limit(limit)
            rows = (await conn.execute(query)).mappings()
            return [_notification(r) for r in rows]

    async def alike(
        self, type_: str, hostname: str, since: float, limit: int = 1000
    ) -> list[HaNotification]:
        """Notifications of this type from this host generated at or after `since`: the
        candidates for a duplicate (their payloads are compared by the caller: JSON
        columns compare differently on each engine)."""
        query = (
            select(NOTIFICATIONS)
            .where(
                NOTIFICATIONS.c.hostname == hostname,
                NOTIFICATIONS.c.type == type_,
                NOTIFICATIONS.c.generated_time >= since,
            )
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            return [_notification(r) for r in (await conn.execute(query)).mappings()]

    async def unsettled(
        self, segment_id: str | None = None, limit: int = 1000
    ) -> list[HaNotification]:
        """Notifications whose status may still change (new, running), oldest first."""
        query = select(NOTIFICATIONS).where(NOTIFICATIONS.c.status.not_in(SETTLED_STATUSES))
        if segment_id is not None:
            query = query.where(NOTIFICATIONS.c.failover_segment_uuid == segment_id)
        query = query.order_by(NOTIFICATIONS.c.created_at, NOTIFICATIONS.c.id).limit(limit)
        async with self.db.engine.connect() as conn:
            return [_notification(r) for r in (await conn.execute(query)).mappings()]

    async def set_status(self, note_id: str, status: str, message: str | None) -> float:
        """Record a new status (and why); returns when."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(NOTIFICATIONS)
                .where(NOTIFICATIONS.c.id == note_id)
                .values(status=status, message=message, updated_at=now)
            )
        return now

    async def faults_of_events(self, event_ids: Collection[str]) -> dict[str, str]:
        """The fault each of these events opened or joined, for those handled."""
        if not event_ids:
            return {}
        query = select(EVENTS.c.id, EVENTS.c.fault_id).where(
            EVENTS.c.id.in_(list(event_ids)), EVENTS.c.fault_id.is_not(None)
        )
        async with self.db.engine.connect() as conn:
            return {r[0]: r[1] for r in (await conn.execute(query)).all()}
