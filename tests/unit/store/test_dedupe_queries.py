"""What the scaled-out inspector asks the store for each batch of events: which were
handled, and the id of each resource's active fault, on either engine, for any count."""

from __future__ import annotations

import asyncio

from opendoctor.core.faults import Fault
from opendoctor.core.model import Event
from opendoctor.store.db import Database
from opendoctor.store.pipeline import EventStore, FaultStore
from tests.sql_trace import starting, statements


async def test_processed_among_names_the_handled_events_of_any_count(db: Database) -> None:
    store = EventStore(db)
    events = [Event("compute.host.down", f"compute{i}", "down", float(i)) for i in range(7)]
    try:
        await store.add(events)
        for event in events[:3]:
            await store.mark_processed(event, None)
        ids = [e.id for e in events]
        assert await store.processed_among(ids) == set(ids[:3])
        assert await store.processed_among(ids[2:5]) == {ids[2]}  # another count
        assert await store.processed_among(["no-such-event"]) == set()
        assert await store.processed_among([]) == set()
    finally:
        await store.close()


async def test_active_ids_among_finds_host_and_server_faults_left_active(db: Database) -> None:
    store = FaultStore(db)
    host = Fault(id="f-host", type="compute.host.down", hostname="compute1", started=1.0)
    server = Fault(
        id="f-vm",
        type="compute.instance.heartbeat.missed",
        hostname="compute2",
        started=1.0,
        instance_id="vm-1",
    )
    cleared = Fault(id="f-old", type="compute.host.down", hostname="compute3", started=1.0)
    cleared.status = "cleared"
    for fault in (host, server, cleared):
        await store.save(fault)
    pairs = [("compute1", None), ("compute2", "vm-1"), ("compute3", None), ("compute2", None)]
    assert await store.active_ids_among(pairs) == {
        ("compute1", None): "f-host",
        ("compute2", "vm-1"): "f-vm",
    }
    # A server's fault is its server's, not its host's, and a pair must match whole.
    assert await store.active_ids_among([("compute9", "vm-1")]) == {}
    assert await store.active_ids_among([]) == {}
    assert await store.active_for("compute1", None) == host
    assert await store.active_for("compute3", None) is None


async def test_both_questions_asked_together_are_one_statement(db: Database) -> None:
    """As the inspector asks them for each batch of events it takes from the bus."""
    events, faults = EventStore(db), FaultStore(db)
    handled = Event("compute.host.down", "compute1", "down", 1.0)
    fresh = Event("compute.instance.heartbeat.missed", "compute2", "down", 2.0)
    try:
        await events.add([handled, fresh])
        await events.mark_processed(handled, None)
        await faults.save(
            Fault(id="f-vm", type=fresh.type, hostname="compute2", started=2.0, instance_id="vm-2")
        )
        with statements(db) as seen:
            done, active = await asyncio.gather(
                events.processed_among([handled.id, fresh.id]),
                faults.active_ids_among({("compute1", None), ("compute2", "vm-2")}),
            )
        assert done == {handled.id}
        assert active == {("compute2", "vm-2"): "f-vm"}
        assert len(starting(seen, "SELECT")) == 1, starting(seen, "SELECT")
    finally:
        await events.close()
        await faults.close()
