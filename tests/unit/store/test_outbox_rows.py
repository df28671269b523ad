"""The outbox's writes, on either engine: what is stored is what was sent, whatever mix
of states a group holds, and a group is one statement however many rows it has."""

from __future__ import annotations

from typing import Any

import orjson

from opendoctor.core.notifications import DELIVERED, FAILED, PENDING, OutboxEntry
from opendoctor.store.db import Database
from opendoctor.store.outbox import OutboxStore
from tests.sql_trace import starting, statements


def entry(i: int, **kw: Any) -> OutboxEntry:
    body = {"alarm_id": f"alarm-{i}", "reason_data": {"event": {"hostname": "compute1"}}}
    return OutboxEntry(
        id=f"entry-{i:05d}",
        alarm_id=f"alarm-{i}",
        url=f"http://127.0.0.1:{9000 + i % 3}/alarm",
        body=body,
        created=1000.0 + i,
        fault_id="fault-1",
        next_attempt=1000.0 + i,
        **kw,
    )


def fields(e: OutboxEntry) -> tuple[Any, ...]:
    return (
        e.id,
        e.alarm_id,
        e.url,
        e.body,
        e.created,
        e.fault_id,
        e.status,
        e.attempts,
        e.next_attempt,
        e.last_error,
        e.delivered,
    )


async def test_a_mixed_group_is_stored_as_given_in_one_statement(db: Database) -> None:
    """Delivered, pending and failed entries side by side (the ORM's bulk insert made a
    statement per run of alike rows), a body sent as encoded bytes stored as that JSON."""
    store = OutboxStore(db)
    entries = []
    for i in range(1200):
        kind = i % 3
        if kind == 0:
            e = entry(i, status=DELIVERED, attempts=1, delivered=1000.5 + i)
        elif kind == 1:
            e = entry(i)  # still pending: its first attempt outlasted the wait
        else:
            e = entry(i, status=FAILED, attempts=5, last_error="HTTP 500: ünïcode ✓")
        entries.append(e)
    entries[7].body = {"nested": {"deep": [1, 2.5, None, "x"]}, "alarm_id": "alarm-7"}
    entries[7].payload = orjson.dumps(entries[7].body)
    with statements(db) as seen:
        await store.add(entries)
    inserts = starting(seen, "INSERT")
    assert len(inserts) == 1, inserts
    stored = await store.list(limit=2000)
    assert [fields(e) for e in stored] == [fields(e) for e in entries]


async def test_ids_already_stored_or_given_twice_keep_the_first(db: Database) -> None:
    store = OutboxStore(db)
    await store.add([entry(1, status=DELIVERED, attempts=1, delivered=1001.5)])
    again = entry(1)  # a replayed event's entry: left as it is
    twice = [entry(2, attempts=1), entry(2, attempts=2)]
    await store.add([again, *twice])
    stored = {e.id: e for e in await store.list()}
    assert stored["entry-00001"].status == DELIVERED
    assert stored["entry-00002"].attempts == 1
    assert len(stored) == 2


async def test_attempts_are_recorded_for_many_rows_in_one_statement(db: Database) -> None:
    store = OutboxStore(db)
    entries = [entry(i) for i in range(600)]
    await store.add(entries)
    for i, e in enumerate(entries[:500]):
        if i % 2:
            e.status, e.attempts, e.delivered = DELIVERED, 1, 2000.0 + i
        else:
            e.attempts, e.next_attempt, e.last_error = 1, 3000.0 + i, "connection refused"
    with statements(db) as seen:
        await store.record_attempts(entries[:500])
    updates = starting(seen, "UPDATE")
    assert len(updates) == 1, updates
    stored = await store.list(limit=1000)
    assert [fields(e) for e in stored] == [fields(e) for e in entries]
    untouched = stored[550]
    assert (untouched.status, untouched.attempts, untouched.last_error) == (PENDING, 0, None)
