"""The event journal: accepted events and their handling, written by group commit.

A storm brings many `PUT /events` at once, and each event's handling ends with a mark
(processed). One transaction each made them queue for SQLite's one writer, behind the
pipeline's own writes, for seconds (some gave up: a 503). Here every write asked for
while one is under way waits for it and then goes with the others in the next one: a
hundred requests cost a few transactions, and a caller is answered once its rows are
committed (or told why not).

On SQLite the batch goes to a writer thread of its own (`SqliteWriter`: sqlite3 itself,
one hand-over per batch); on PostgreSQL it is one transaction of one executemany per
statement. A batch that fails for another reason than an unreachable database is
written again request by request, so that one bad request does not sink the others.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from sqlalchemy import Table

from opendoctor.core.model import Event
from opendoctor.infra.group_commit import GroupCommit
from opendoctor.store.bulk import insert_rows, update_rows
from opendoctor.store.db import Database, DatabaseUnavailable, dialect_insert, unavailable
from opendoctor.store.sqlite_writer import OrElse, SqliteWriter, Statement
from opendoctor.store.tables import EventRow

EVENTS = cast(Table, EventRow.__table__)

log = logging.getLogger(__name__)

_COLUMNS = ("id", "type", "hostname", "status", "time", "received", "body", "processed", "fault_id")
_NAMES = ", ".join(f'"{c}"' for c in _COLUMNS)
_MARKS = ", ".join("?" for _ in _COLUMNS)
# Accepting never undoes a mark: the row the pipeline wrote as processed stays so.
_SQLITE_ADD = f'INSERT INTO "events" ({_NAMES}) VALUES ({_MARKS}) ON CONFLICT ("id") DO NOTHING'
# Marking an event whose row is there (nearly always): no body to encode again.
_SQLITE_SET_MARK = 'UPDATE "events" SET "processed" = 1, "fault_id" = ? WHERE "id" = ?'
# An upsert: a replayed event may be marked before (or without) being added again.
_SQLITE_MARK = (
    f'INSERT INTO "events" ({_NAMES}) VALUES ({_MARKS}) '
    'ON CONFLICT ("id") DO UPDATE SET "processed" = 1, "fault_id" = excluded."fault_id"'
)


def event_row(event: Event, processed: bool, fault_id: str | None) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "hostname": event.hostname,
        "status": event.status,
        "time": event.time,
        "received": event.received,
        # The record itself: the engine's JSON type writes it with orjson (store/db.py),
        # which reads dataclasses directly, ten times faster than a dict made by asdict.
        "body": event,
        "processed": processed,
        "fault_id": fault_id,
    }


def _encoded_row(event: Event, processed: bool, fault_id: str | None) -> dict[str, Any]:
    """`event_row` with the body encoded already, as `store.bulk` takes JSON."""
    return event_row(event, processed, fault_id) | {"body": orjson.dumps(event).decode()}


def _sqlite_row(event: Event, processed: bool, fault_id: str | None) -> tuple[Any, ...]:
    # As the engine's JSON type writes the body (store/db.py), straight from the record:
    # orjson reads dataclasses itself, ten times faster than a dict made by asdict.
    body = orjson.dumps(event).decode()
    e = event
    return (e.id, e.type, e.hostname, e.status, e.time, e.received, body, int(processed), fault_id)


@dataclass(slots=True)
class _Request:
    """One caller's share of a batch: events to add, events handled (with their fault)."""

    added: list[Event] = field(default_factory=list)
    marked: list[tuple[Event, str | None]] = field(default_factory=list)


def _weight(request: _Request) -> int:
    return len(request.added) + len(request.marked)


class EventJournal:
    def __init__(self, db: Database, max_batch: int = 10_000) -> None:
        self.db = db
        path = db.sqlite_file
        self._writer = SqliteWriter(path, name="event-journal") if path else None
        # A database out of reach fails the whole batch at once; any other failure may be
        # one request's doing, so each is written again alone. A caller that goes away
        # does not take its rows out: they may already be in a transaction with others'.
        self._commit: GroupCommit[_Request] = GroupCommit(
            lambda batch: self._write(batch),  # looked up at each write: tests replace it
            _weight,
            most=max_batch,
            alone=lambda exc: not unavailable(exc),
        )
        self.transactions = 0  # committed, since start (the tests count them)

    async def add(self, events: list[Event]) -> None:
        """Record accepted events; return once they are committed. Raises what the write
        raised (`DatabaseUnavailable` when the database does not take it): then nothing
        of these events is kept."""
        if events:
            await self._commit.write(_Request(added=list(events)))

    async def mark_processed(self, event: Event, fault_id: str | None) -> None:
        await self._commit.write(_Request(marked=[(event, fault_id)]))

    async def _write(self, batch: Sequence[_Request]) -> None:
        # One row per id and statement (the last mark wins): PostgreSQL refuses a
        # statement that touches a row twice.
        added = {e.id: e for r in batch for e in r.added}
        marked = {e.id: (e, f) for r in batch for e, f in r.marked}
        if self._writer is not None:
            statements: list[Statement] = []
            if added:
                rows = [_sqlite_row(e, False, None) for e in added.values()]
                statements.append((_SQLITE_ADD, rows))
            if marked:
                pairs = list(marked.values())
                statements.append(
                    OrElse(
                        _SQLITE_SET_MARK,
                        [(f, e.id) for e, f in pairs],
                        lambda: (_SQLITE_MARK, [_sqlite_row(e, True, f) for e, f in pairs]),
                    )
                )
            try:
                await self._writer.write(statements)
            except sqlite3.OperationalError as exc:
                # Locked past the busy timeout, disk full or unreadable: nothing was
                # written; the caller may try again later (the API answers 503).
                raise DatabaseUnavailable(f"sqlite: {exc}") from exc
        else:
            # One statement per kind of write, whatever the count (`store.bulk`): in a
            # storm with monitors reporting, fifty thousand events a minute.
            async with self.db.engine.begin() as conn:
                if added:
                    new = [_encoded_row(e, False, None) for e in added.values()]
                    await insert_rows(conn, EVENTS, new, skip_conflicts_on="id")
                if marked:
                    pairs = list(marked.values())
                    marks = [{"id": e.id, "processed": True, "fault_id": f} for e, f in pairs]
                    if await update_rows(conn, EVENTS, "id", marks) < len(pairs):
                        # Some were never added here (handed over by a process that
                        # journals elsewhere): the whole rows.
                        mark = dialect_insert(self.db, EventRow)
                        mark = mark.on_conflict_do_update(
                            index_elements=["id"],
                            set_={"processed": True, "fault_id": mark.excluded.fault_id},
                        )
                        await conn.execute(mark, [event_row(e, True, f) for e, f in pairs])
        self.transactions += 1

    async def close(self) -> None:
        """Finish the writes under way, then close the writer thread."""
        await self._commit.close()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
