"""The event journal: concurrent writes share a transaction; a failed one keeps nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from opendoctor.core.model import Event
from opendoctor.store.db import Database, DatabaseUnavailable
from opendoctor.store.event_journal import EventJournal
from opendoctor.store.pipeline import EventStore
from opendoctor.store.tables import EventRow


def host_event(host: str, n: int) -> Event:
    return Event("compute.host.down", host, "down", float(n), monitor="test")


async def rows(db: Database) -> dict[str, tuple[bool, str | None]]:
    async with db.sessions() as session:
        found = (await session.execute(select(EventRow))).scalars().all()
    return {r.id: (r.processed, r.fault_id) for r in found}


async def test_concurrent_adds_share_transactions_and_each_event_is_stored_once(
    db: Database,
) -> None:
    journal = EventJournal(db)
    requests = [[host_event(f"compute{i}", j) for j in range(3)] for i in range(50)]
    try:
        await asyncio.gather(*(journal.add(events) for events in requests))
        # Every request waited for its own rows only, yet far fewer commits than requests.
        assert 1 <= journal.transactions < len(requests)
        await journal.add(requests[0])  # again: an accepted row is not duplicated
    finally:
        await journal.close()
    stored = await rows(db)
    assert set(stored) == {e.id for events in requests for e in events}
    assert all(not processed for processed, _ in stored.values())
    # Each record reads back whole, as a replay takes it.
    replay = {e.id: e for e in await EventStore(db).unprocessed()}
    assert all(replay[e.id] == e for events in requests for e in events)


async def test_marks_go_with_adds_and_are_not_undone(db: Database) -> None:
    store = EventStore(db)
    first, second, replayed = (host_event("compute1", n) for n in range(3))
    try:
        await store.add([first])
        await asyncio.gather(
            store.add([second]),
            store.mark_processed(first, "fault-1"),
            store.mark_processed(second, "fault-2"),
            # Handled before (or without) being added again: the mark makes the row.
            store.mark_processed(replayed, None),
        )
        await store.add([first, second, replayed])  # a late accept undoes no mark
    finally:
        await store.close()
    assert await rows(db) == {
        first.id: (True, "fault-1"),
        second.id: (True, "fault-2"),
        replayed.id: (True, None),
    }
    assert await store.unprocessed() == []


async def test_a_request_the_database_refuses_keeps_nothing_and_sinks_no_other(
    db: Database,
) -> None:
    journal = EventJournal(db)
    good = [host_event("compute1", 1), host_event("compute2", 2)]
    bad = [host_event("compute3", 3), host_event("compute4", 4)]
    bad[1].hostname = None  # type: ignore[assignment]  # NOT NULL: the write fails
    try:
        outcome = await asyncio.gather(journal.add(good), journal.add(bad), return_exceptions=True)
    finally:
        await journal.close()
    assert outcome[0] is None
    assert isinstance(outcome[1], Exception)
    # All or nothing per request: the bad request's good event is not kept either.
    assert set(await rows(db)) == {e.id for e in good}


async def test_an_unreachable_database_fails_the_whole_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = EventJournal(db)
    calls = 0

    async def down(batch: object) -> None:
        nonlocal calls
        calls += 1
        raise DatabaseUnavailable("the database went away")

    monkeypatch.setattr(journal, "_write", down)
    try:
        outcome = await asyncio.gather(
            *(journal.add([host_event(f"compute{i}", i)]) for i in range(5)),
            return_exceptions=True,
        )
    finally:
        await journal.close()
    assert all(isinstance(o, DatabaseUnavailable) for o in outcome)
    # Not retried request by request: each would wait as long for the same answer.
    assert calls == 1
    assert await rows(db) == {}


async def test_a_caller_that_goes_away_leaves_its_rows_written(db: Database) -> None:
    journal = EventJournal(db)
    events = [host_event("compute1", 1)]
    try:
        task = asyncio.create_task(journal.add(events))
        await asyncio.sleep(0)  # queued in the batch under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await journal.close()  # finishes the writes under way
    assert set(await rows(db)) == {events[0].id}
