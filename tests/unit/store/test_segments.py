"""Failover segments, their hosts and Masakari notifications in the store, on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest

from opendoctor.core.model import Event
from opendoctor.core.ports import SegmentSource
from opendoctor.core.segments import HaNotification, Segment, SegmentHost
from opendoctor.store.db import Database
from opendoctor.store.ha_notifications import HaNotificationStore
from opendoctor.store.paging import UnknownMarker
from opendoctor.store.pipeline import EventStore
from opendoctor.store.segments import Conflict, SegmentStore


async def _segment(store: SegmentStore, name: str, at: float, **kw: object) -> Segment:
    return await store.create(Segment(name=name, created_at=at, **kw))  # type: ignore[arg-type]


async def test_segments_page_in_order_and_refuse_a_name_taken(db: Database) -> None:
    store = SegmentStore(db)
    a = await _segment(store, "a", 1.0)
    b = await _segment(store, "b", 2.0, recovery_method="reserved_host")
    c = await _segment(store, "c", 3.0, enabled=False)
    with pytest.raises(Conflict):
        await _segment(store, "a", 4.0)

    assert [s.name for s in await store.segments()] == ["c", "b", "a"]  # newest first
    first = await store.segments(order=[("name", False)], limit=2)
    assert [s.name for s in first] == ["a", "b"]
    rest = await store.segments(order=[("name", False)], limit=2, marker=first[-1].id)
    assert [s.name for s in rest] == ["c"]
    assert await store.segments({"recovery_method": "reserved_host"}) == [b]
    assert await store.segments({"enabled": False}) == [c]
    with pytest.raises(UnknownMarker):
        await store.segments(marker="no-such-segment")
    assert await store.get(a.id) == a
    assert await store.get("nope") is None


async def test_a_host_is_in_one_segment_per_service_type(db: Database) -> None:
    store = SegmentStore(db)
    one = await _segment(store, "one", 1.0)
    two = await _segment(store, "two", 2.0)
    other = await _segment(store, "other", 3.0, service_type="STORAGE")
    await store.add_host(SegmentHost("compute1", one.id))
    with pytest.raises(Conflict):
        await store.add_host(SegmentHost("compute1", two.id))
    # Another service type may have it too.
    await store.add_host(SegmentHost("compute1", other.id))
    with pytest.raises(KeyError):
        await store.add_host(SegmentHost("compute2", "no-such-segment"))

    # Moving a segment to a service type where one of its hosts is taken: refused whole.
    with pytest.raises(Conflict):
        await store.update(other.id, {"service_type": "COMPUTE", "description": "moved"})
    unchanged = await store.get(other.id)
    assert unchanged is not None and unchanged.service_type == "STORAGE"
    assert unchanged.description is None
    with pytest.raises(Conflict):
        await store.update(two.id, {"name": "one"})
    with pytest.raises(KeyError):
        await store.update("nope", {"name": "x"})


async def test_hosts_change_page_and_go_with_their_segment(db: Database) -> None:
    store = SegmentStore(db)
    seg = await _segment(store, "seg", 1.0, recovery_method="reserved_host")
    for i, name in enumerate(("compute1", "compute2", "compute3")):
        await store.add_host(SegmentHost(name, seg.id, reserved=name == "compute3", created_at=i))
    hosts = await store.hosts(seg.id, order=[("name", False)])
    assert [h.name for h in hosts] == ["compute1", "compute2", "compute3"]
    assert [h.name for h in await store.hosts(seg.id, {"reserved": True})] == ["compute3"]
    page = await store.hosts(seg.id, order=[("name", True)], limit=1, marker=hosts[2].id)
    assert [h.name for h in page] == ["compute2"]

    changed = await store.update_host(seg.id, hosts[0].id, {"on_maintenance": True, "id": "x"})
    assert changed.on_maintenance and changed.id == hosts[0].id and changed.updated_at
    with pytest.raises(Conflict):
        await store.update_host(seg.id, hosts[0].id, {"name": "compute2"})
    with pytest.raises(KeyError):
        await store.update_host("other-segment", hosts[0].id, {"reserved": True})
    assert await store.host("other-segment", hosts[0].id) is None
    assert await store.delete_host(seg.id, hosts[1].id)
    assert not await store.delete_host(seg.id, hosts[1].id)

    assert await store.delete(seg.id)
    assert await store.get(seg.id) is None
    assert await store.hosts(seg.id) == []
    # Its hosts' names are free again.
    again = await _segment(store, "again", 2.0)
    await store.add_host(SegmentHost("compute1", again.id))


async def test_recovery_reads_the_segment_of_a_host_and_takes_reserved_hosts(
    db: Database,
) -> None:
    store = SegmentStore(db)
    source: SegmentSource = store  # what recovery is given
    storage = await _segment(store, "storage", 1.0, service_type="STORAGE")
    compute = await _segment(store, "compute", 2.0, recovery_method="reserved_host")
    await store.add_host(SegmentHost("compute1", storage.id))
    await store.add_host(SegmentHost("compute1", compute.id))
    await store.add_host(SegmentHost("compute9", compute.id, reserved=True))

    view = await source.segment_of("compute1")
    assert view is not None and view.segment == compute  # the COMPUTE one first
    assert sorted(h.name for h in view.hosts) == ["compute1", "compute9"]
    assert await source.segment_of("nowhere") is None

    await source.set_reserved(compute.id, "compute9", False)
    view = await source.segment_of("compute9")
    assert view is not None
    spare = view.host("compute9")
    assert spare is not None and not spare.reserved


async def test_notifications_page_settle_and_find_their_events_faults(db: Database) -> None:
    notes = HaNotificationStore(db)
    made = []
    for i in range(3):
        note = HaNotification(
            "COMPUTE_HOST",
            "compute1",
            100.0 + i,
            {"event": "STOPPED", "n": str(i)},
            source_host_uuid="h1",
            failover_segment_uuid="s1",
            created_at=200.0 + i,
        )
        note.event_id = note.id
        await notes.add(note)
        made.append(note)
    assert [n.id for n in await notes.notifications()] == [n.id for n in reversed(made)]
    page = await notes.notifications(order=[("generated_time", False)], limit=1, marker=made[0].id)
    assert [n.id for n in page] == [made[1].id]
    assert [n.id for n in await notes.notifications(generated_since=101.5)] == [made[2].id]
    assert len(await notes.alike("COMPUTE_HOST", "compute1", 101.0)) == 2
    assert await notes.alike("VM", "compute1", 0.0) == []

    await notes.set_status(made[0].id, "finished", "done")
    stored = await notes.get(made[0].id)
    assert stored is not None and stored.status == "finished" and stored.message == "done"
    assert {n.id for n in await notes.unsettled()} == {made[1].id, made[2].id}
    assert await notes.unsettled("other-segment") == []
    assert [n.id for n in await notes.notifications({"status": "finished"})] == [made[0].id]

    events = EventStore(db)
    event = Event("compute.host.down", "compute1", "down", 1.0, id=made[1].id)
    await events.mark_processed(event, "fault-1")
    assert await notes.faults_of_events([made[1].id, made[2].id]) == {made[1].id: "fault-1"}

    await notes.withdraw(made[2].id)
    assert await notes.get(made[2].id) is None
