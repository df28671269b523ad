"""The intake spool: accepted events, in a SQLite file of their own, until the journal has
them.

Why a file of its own: SQLite has one writer per file, and during a storm the service's
own writes (outbox rows, alarms' transitions, faults) hold the main file's lock across
turns of a loop that delivery keeps busy. The journal's commit of accepted events waited
for that lock up to 4 s (a 5 s busy timeout from a 503), so the front loop's events API
(app/front.py) answered no faster than the service's loop turned. The spool is written
by nobody else: a batch of accepted events commits in about a millisecond, whatever the
rest of the service is doing.

An event is accepted once it is in the spool. The service records it in the journal
(the `events` table, read by `GET /v1/events` and by the restart's replay) right after
handing it to the bus, and then drops it from the spool. A start first moves into the
journal whatever the spool still holds (a process that died in between), before the
journal's unhandled events are replayed (`app/intake.py`).

Only for a SQLite file: PostgreSQL takes concurrent writers, and the front loop hands its
events to the service's loop there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson

from opendoctor.core.model import Event
from opendoctor.infra.group_commit import GroupCommit
from opendoctor.store.sqlite_writer import SqliteWriter, Statement

_SCHEMA = 'CREATE TABLE IF NOT EXISTS "spool" ("id" TEXT PRIMARY KEY, "body" TEXT NOT NULL)'
_ADD = 'INSERT INTO "spool" ("id", "body") VALUES (?, ?) ON CONFLICT ("id") DO NOTHING'
_DROP = 'DELETE FROM "spool" WHERE "id" = ?'
_ALL = 'SELECT "body" FROM "spool" ORDER BY rowid'

# One caller's part of a group commit: events to add, or ids to drop.
_Part = tuple[Sequence[Event], Sequence[str]]


def spool_path(database: str) -> str:
    """The spool beside a SQLite database file, as SQLite's own `-wal` is."""
    return f"{database}-spool"


class EventSpool:
    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = SqliteWriter(path, name="event-spool", setup=(_SCHEMA,))
        # A group commit per event loop that writes: the front loop adds, the service's
        # loop drops (a group commit's waiters and writer task belong to one loop).
        self._commits: dict[asyncio.AbstractEventLoop, GroupCommit[_Part]] = {}

    def _commit(self) -> GroupCommit[_Part]:
        loop = asyncio.get_running_loop()
        commit = self._commits.get(loop)
        if commit is None:
            commit = self._commits[loop] = GroupCommit(self._write, _weight)
        return commit

    async def add(self, events: Sequence[Event]) -> None:
        """Keep `events`; return once committed (raises why not: nothing is kept then)."""
        if events:
            await self._commit().write((events, ()))

    async def drop(self, ids: Sequence[str]) -> None:
        """Forget these events: the journal has them."""
        if ids:
            await self._commit().write(((), ids))

    async def held(self) -> list[Event]:
        """The events kept, in the order they were accepted."""
        rows = await self._writer.read(_ALL)
        return [Event(**orjson.loads(body)) for (body,) in rows]

    async def _write(self, parts: list[_Part]) -> None:
        added = [(e.id, orjson.dumps(e).decode()) for events, _ in parts for e in events]
        dropped = [(i,) for _, ids in parts for i in ids]
        statements: list[Statement] = []
        if added:
            statements.append((_ADD, added))
        if dropped:
            statements.append((_DROP, dropped))
        await self._writer.write(statements)

    async def close(self) -> None:
        """Finish this loop's writes under way (the front loop's are over: it stops taking
        events in before the service stops), then close the file."""
        commit = self._commits.pop(asyncio.get_running_loop(), None)
        if commit is not None:
            await commit.close()
        self._commits.clear()
        await self._writer.close()


def _weight(part: _Part) -> int:
    return len(part[0]) + len(part[1])
