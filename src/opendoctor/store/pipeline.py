"""Repositories for what the fault pipeline writes: events, faults, resources."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import Table, delete, select

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import Event, Host, Server
from opendoctor.infra.group_commit import GroupCommit
from opendoctor.store.batch_reads import BatchReads
from opendoctor.store.bulk import insert_rows
from opendoctor.store.db import Database
from opendoctor.store.event_journal import EventJournal
from opendoctor.store.event_spool import EventSpool, spool_path
from opendoctor.store.paging import after_marker
from opendoctor.store.tables import EventRow, FaultRow, ResourceRow

FAULTS = cast(Table, FaultRow.__table__)
RESOURCES = cast(Table, ResourceRow.__table__)
RESOURCE_ROWS = 500  # resources written per statement


def _event_from_row(row: EventRow) -> Event:
    body = dict(row.body)
    return Event(
        type=row.type,
        hostname=row.hostname,
        status=row.status,
        time=row.time,
        monitor=body.get("monitor", ""),
        monitor_event_id=body.get("monitor_event_id", ""),
        reporter=body.get("reporter", ""),
        details=body.get("details", {}),
        id=row.id,
        received=row.received,
        trace=body.get("trace", {}),
        instance_id=body.get("instance_id"),
    )


class EventStore:
    """Accepted events: written through the journal (group commit), read from the engine."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.journal = EventJournal(db)
        path = db.sqlite_file
        # Where the front loop keeps what it accepts (store/event_spool.py).
        self.spool = EventSpool(spool_path(path)) if path else None
        # Concurrent batches' questions, asked together, with the faults' (batch_reads).
        self._reads = BatchReads.of(db)

    async def add(self, events: list[Event]) -> None:
        """Record accepted events; durable when this returns. A row the pipeline already
        wrote as processed stays so."""
        await self.journal.add(events)

    async def mark_processed(self, event: Event, fault_id: str | None) -> None:
        # An upsert: a replayed event is marked whether or not its row is still there.
        await self.journal.mark_processed(event, fault_id)

    async def close(self) -> None:
        await self.journal.close()
        if self.spool is not None:
            await self.spool.close()

    async def is_processed(self, event_id: str) -> bool:
        """Whether the pipeline already handled this event (a redelivered message)."""
        return event_id in await self.processed_among([event_id])

    async def processed_among(self, event_ids: Collection[str]) -> set[str]:
        """Which of these events the pipeline already handled (one query, shared with
        the other batches asking at the same time, and their faults' question)."""
        return await self._reads.processed_among(event_ids)

    async def unprocessed(self) -> list[Event]:
        async with self.db.sessions() as session:
            rows = await session.scalars(
                select(EventRow)
                .where(EventRow.processed.is_(False))
                # Ties broken the same way on every engine (PostgreSQL has no rowid order).
                .order_by(EventRow.received, EventRow.time, EventRow.id)
            )
            return [_event_from_row(r) for r in rows]

    async def recent(self, limit: int = 100, marker: str | None = None) -> list[dict[str, Any]]:
        """Newest first; after `marker` (an event id), the page that follows it."""
        query = select(EventRow).order_by(EventRow.received.desc(), EventRow.id).limit(limit)
        async with self.db.sessions() as session:
            query = await after_marker(
                session, query, EventRow.id, EventRow.received, marker, descending=True
            )
            rows = await session.scalars(query)
            return [dict(r.body, processed=r.processed, fault_id=r.fault_id) for r in rows]


def _fault_from_row(row: FaultRow) -> Fault:
    return Fault(
        id=row.id,
        type=row.type,
        hostname=row.hostname,
        started=row.started,
        status=row.status,
        cleared=row.cleared,
        trace=dict(row.trace),
        affected=list(row.affected),
        recovery=[RecoveryItem(**item) for item in row.recovery],
        instance_id=row.instance_id,
        signals=list(row.signals or []),
        flaps=row.flaps or 0,
        held_until=row.held_until,
    )


def _fault_values(fault: Fault) -> dict[str, Any]:
    """The fault's row as it is now (JSON columns encoded)."""
    return {
        "id": fault.id,
        "type": fault.type,
        "hostname": fault.hostname,
        "status": fault.status,
        "started": fault.started,
        "cleared": fault.cleared,
        "trace": orjson.dumps(fault.trace).decode(),
        "affected": orjson.dumps(fault.affected).decode(),
        "recovery": orjson.dumps(fault.recovery).decode(),
        "instance_id": fault.instance_id,
        "signals": orjson.dumps(fault.signals).decode(),
        "flaps": fault.flaps,
        "held_until": fault.held_until,
    }


_FAULT_COLUMNS = tuple(c for c in _fault_values(Fault("", "", "", 0.0)) if c != "id")


class FaultStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._reads = BatchReads.of(db)
        # A storm saves its faults by the hundred at once (opened, marked, settled):
        # written together, one upsert per group (infra/group_commit.py).
        self._saves: GroupCommit[dict[str, Any]] = GroupCommit(self._write, lambda _: 1)

    async def save(self, fault: Fault) -> None:
        """Store the fault as it is now (an upsert: inserted or replaced whole)."""
        await self._saves.write(_fault_values(fault))

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        # Of a fault saved twice in the group, its later picture (`insert_rows`).
        async with self.db.engine.begin() as conn:
            await insert_rows(conn, FAULTS, rows, "id", replace=_FAULT_COLUMNS)

    async def close(self) -> None:
        await self._saves.close()

    async def get(self, fault_id: str) -> Fault | None:
        async with self.db.sessions() as session:
            row = await session.get(FaultRow, fault_id)
            return None if row is None else _fault_from_row(row)

    async def active_for(self, hostname: str, instance_id: str | None) -> Fault | None:
        """The active fault about this resource, if any (opened by another replica)."""
        pair = (hostname, instance_id)
        fault_id = (await self.active_ids_among([pair])).get(pair)
        return None if fault_id is None else await self.get_active(fault_id)

    async def get_active(self, fault_id: str) -> Fault | None:
        """The fault, whole, if it is still active (it may have cleared since its id
        was read)."""
        fault = await self.get(fault_id)
        return fault if fault is not None and fault.status == "active" else None

    async def active_ids_among(
        self, resources: Collection[tuple[str, str | None]]
    ) -> dict[tuple[str, str | None], str]:
        """The id of the active fault about each of these (hostname, instance_id) pairs,
        in one query (shared with other batches asking at the same time); a pair with
        no active fault is left out. Ids, not faults: asked for every batch of events of
        the scaled-out bus, the answer is mostly "the one known already", and whole
        rows (their timelines decoded) cost a storm a quarter of its CPU."""
        return await self._reads.active_ids_among(resources)

    async def list(
        self, status: str | None = None, limit: int = 100, marker: str | None = None
    ) -> list[Fault]:
        """Newest first; after `marker` (a fault id), the page that follows it."""
        query = select(FaultRow).order_by(FaultRow.started.desc(), FaultRow.id).limit(limit)
        if status is not None:
            query = query.where(FaultRow.status == status)
        async with self.db.sessions() as session:
            query = await after_marker(
                session, query, FaultRow.id, FaultRow.started, marker, descending=True
            )
            return [_fault_from_row(r) for r in await session.scalars(query)]

    async def active_heads(self) -> Sequence[Fault]:
        """Every active fault, without its timeline, servers or recovery: what another
        inspector needs to mirror it in its graph, cheap enough to ask every second."""
        query = select(
            FaultRow.id, FaultRow.type, FaultRow.hostname, FaultRow.started, FaultRow.instance_id
        ).where(FaultRow.status == "active")
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Fault(
                id=r.id,
                type=r.type,
                hostname=r.hostname,
                started=r.started,
                instance_id=r.instance_id,
            )
            for r in rows
        ]

    async def cleared_among(self, fault_ids: Iterable[str]) -> set[str]:
        """Which of these faults the store has as cleared (by whichever inspector)."""
        ids = list(fault_ids)
        if not ids:
            return set()
        query = select(FaultRow.id).where(FaultRow.id.in_(ids), FaultRow.status == "cleared")
        async with self.db.sessions() as session:
            return set((await session.scalars(query)).all())


class ResourceStore:
    """Last known hosts and servers: what the API shows even before the VIM answers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, hosts: Iterable[Host], servers: Iterable[Server]) -> None:
        now = time.time()
        rows = [
            {
                "id": f"host:{h.name}",
                "kind": "host",
                "name": h.name,
                "project_id": None,
                "host": None,
                "state": h.state,
                "data": orjson.dumps(h).decode(),
                "updated": now,
            }
            for h in hosts
        ] + [
            {
                "id": f"server:{s.id}",
                "kind": "server",
                "name": s.name,
                "project_id": s.project_id,
                "host": s.host,
                "state": s.status,
                "data": orjson.dumps(s).decode(),
                "updated": now,
            }
            for s in servers
        ]
        if not rows:
            return
        # A few statements for a fault's thousands of servers, each encoded by orjson from
        # the dataclass as it is (`asdict` copied each one first): the changes a storm's
        # marks bring back from the VIM took 15 ms of the loop per write.
        changed = ("name", "project_id", "host", "state", "data", "updated")
        async with self.db.engine.begin() as conn:
            # In statements of RESOURCE_ROWS: the loop runs other callbacks between them.
            # In order, so that of one resource given twice the later change stays.
            for start in range(0, len(rows), RESOURCE_ROWS):
                chunk = rows[start : start + RESOURCE_ROWS]
                await insert_rows(conn, RESOURCES, chunk, "id", replace=changed)

    async def load(self) -> tuple[list[Host], list[Server]]:
        async with self.db.sessions() as session:
            rows = list(await session.scalars(select(ResourceRow)))
        hosts = [Host(**r.data) for r in rows if r.kind == "host"]
        servers = [Server(**r.data) for r in rows if r.kind == "server"]
        return hosts, servers

    async def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        async with self.db.sessions.begin() as session:
            await session.execute(delete(ResourceRow).where(ResourceRow.id.in_(ids)))
