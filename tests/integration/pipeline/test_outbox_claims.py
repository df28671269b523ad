"""Several processes on one outbox: each due notification is retried by one of them,
and by another if that one goes away. Both engines (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from opendoctor.core.notifications import OutboxEntry
from opendoctor.store.db import Database
from opendoctor.store.outbox import OutboxStore


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[tuple[OutboxStore, OutboxStore]]:
    one, two = Database(db_url), Database(db_url)
    await one.migrate()
    yield OutboxStore(one), OutboxStore(two)
    await one.close()
    await two.close()


def entry(i: int, due: float) -> OutboxEntry:
    return OutboxEntry(
        id=f"entry-{i:03d}",
        alarm_id="alarm-1",
        url="http://consumer.example/failure",
        body={"n": i},
        created=float(i),
        attempts=1,
        next_attempt=due,
    )


async def test_each_due_entry_is_claimed_by_one_process(
    stores: tuple[OutboxStore, OutboxStore],
) -> None:
    one, two = stores
    await one.add([entry(i, due=100.0) for i in range(60)] + [entry(99, due=500.0)])
    # Both look at once, in small batches, until nothing is left.
    got: dict[str, list[str]] = {"one": [], "two": []}

    async def drain(name: str, store: OutboxStore) -> None:
        while batch := await store.claim_due(now=200.0, until=1000.0, limit=7):
            got[name] += [e.id for e in batch]

    await asyncio.gather(drain("one", one), drain("two", two))
    claimed = got["one"] + got["two"]
    assert len(claimed) == len(set(claimed)) == 60  # no entry twice, none missed
    assert "entry-099" not in claimed  # not due yet
    # Claimed entries are not due again until the claim runs out (only the late one is)...
    assert [e.id for e in await one.claim_due(now=999.0, until=2000.0)] == ["entry-099"]
    # ...and then any process may take them (their claimant died).
    again = await two.claim_due(now=1000.0, until=2000.0)
    assert len(again) == 60
    assert [e.id for e in again] == sorted(e.id for e in again)  # oldest first
