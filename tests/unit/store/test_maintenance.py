"""Planned-maintenance sessions and owners' constraints in the store, on SQLite and
PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import IntegrityError

from opendoctor.core.maintenance import (
    HOST_DRAINING,
    HOST_RETURNED,
    INSTANCE_DONE,
    INSTANCE_MOVING,
    LIVE_MIGRATE,
    MAINTENANCE_CANCELLED,
    MAINTENANCE_DONE,
    MAINTENANCE_FAILED,
    OWN_ACTION,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    HostProgress,
    InstanceConstraints,
    InstanceGroupConstraints,
    InstanceProgress,
    ProjectProgress,
    Session,
)
from opendoctor.store.db import Database
from opendoctor.store.maintenance import MaintenanceStore


def _full_session() -> Session:
    """A session well into its run: every part of the document filled."""
    session = Session(
        hosts=["compute1", "compute2"],
        maintenance_at=1_700_000_000.25,
        workflow="default",
        metadata={"openstack_version": "2024.1", "nested": {"a": [1, 2.5, None]}},
        actions=[{"plugin": "power_cycle", "metadata": {"wait": 30}}],
        created=1_700_000_000.125,
        state=PREPARE_MAINTENANCE,
        waiting="waiting for the answer of project p1",
        current_host="compute1",
    )
    session.projects["p1"] = ProjectProgress(
        "p1",
        asked=PREPARE_MAINTENANCE,
        asked_at=1_700_000_010.0,
        deadline=1_700_000_070.0,
        reply=f"ACK_{PREPARE_MAINTENANCE}",
        replied_at=1_700_000_020.5,
        instance_actions={"vm1": LIVE_MIGRATE, "vm2": OWN_ACTION},
        instance_ids=["vm1", "vm2"],
        about=["vm1"],
    )
    session.host_progress = {
        "compute1": HostProgress("compute1", HOST_DRAINING, started=1_700_000_030.0),
        "compute2": HostProgress("compute2", version_before="1.0"),
    }
    session.instances["vm1"] = InstanceProgress(
        "vm1",
        "p1",
        "compute1",
        name="web-1",
        group_id="g1",
        action=LIVE_MIGRATE,
        state=INSTANCE_MOVING,
        to_host="compute2",
        started=1_700_000_031.0,
    )
    session.instances["vm2"] = InstanceProgress("vm2", "p1", "compute1", error="boot: ünïcode")
    session.note("session created over 2 hosts", at=1_700_000_000.125)
    # PostgreSQL cannot store NUL in text: a message from a host that has one must
    # still be saved (the document escapes it).
    session.note("host said: bad\x00byte", at=1_700_000_040.0)
    return session


async def test_a_session_reads_back_as_it_was_saved(db: Database) -> None:
    store = MaintenanceStore(db)
    session = _full_session()
    await store.add(session)

    assert await store.get(session.session_id) == session
    assert await store.get("no-such-session") is None
    # The same id twice is refused, not overwritten.
    with pytest.raises(IntegrityError):
        await store.add(Session(hosts=["other"], maintenance_at=0.0, session_id=session.session_id))
    assert await store.get(session.session_id) == session


async def test_save_persists_the_changes_and_stamps_the_time(db: Database) -> None:
    store = MaintenanceStore(db)
    session = _full_session()
    await store.add(session)

    session.state = PLANNED_MAINTENANCE
    session.host_progress["compute1"].state = HOST_RETURNED
    session.host_progress["compute1"].version_after = "2.0"
    session.instances["vm1"].state = INSTANCE_DONE
    session.projects["p1"].reply = None
    session.waiting = None
    session.note("compute1 back in service")
    session.updated = 0.0
    before = time.time()
    await store.save(session)

    assert session.updated >= before
    stored = await store.get(session.session_id)
    assert stored == session
    assert [s.session_id for s in await store.active()] == [session.session_id]

    session.state = MAINTENANCE_DONE
    await store.save(session)
    # The state copied beside the document follows it: the session is no longer running.
    assert await store.active() == []
    assert [s.state for s in await store.sessions(active=False)] == [MAINTENANCE_DONE]


async def test_sessions_list_newest_first_and_by_whether_they_ended(db: Database) -> None:
    store = MaintenanceStore(db)
    states = [PREPARE_MAINTENANCE, MAINTENANCE_DONE, PLANNED_MAINTENANCE, MAINTENANCE_FAILED]
    states += [MAINTENANCE_CANCELLED, PREPARE_MAINTENANCE]
    made = [
        Session(hosts=[f"h{i}"], maintenance_at=0.0, state=state, created=100.0 + i)
        for i, state in enumerate(states)
    ]
    # Added out of order: the order comes from `created`, not from insertion.
    for session in reversed(made):
        await store.add(session)

    def ids(sessions: list[Session]) -> list[str]:
        return [s.session_id for s in sessions]

    newest_first = [s.session_id for s in reversed(made)]
    assert ids(await store.sessions()) == newest_first
    assert ids(await store.sessions(limit=2)) == newest_first[:2]
    assert ids(await store.sessions(active=True)) == ids([made[5], made[2], made[0]])
    assert ids(await store.sessions(active=False)) == ids([made[4], made[3], made[1]])
    assert ids(await store.sessions(limit=1, active=False)) == ids([made[4]])
    assert ids(await store.active()) == ids([made[0], made[2], made[5]])  # oldest first


async def test_a_deleted_session_is_gone_and_a_late_save_does_not_bring_it_back(
    db: Database,
) -> None:
    store = MaintenanceStore(db)
    kept = Session(hosts=["a"], maintenance_at=0.0, created=1.0)
    gone = Session(hosts=["b"], maintenance_at=0.0, created=2.0)
    await store.add(kept)
    await store.add(gone)

    assert await store.delete(gone.session_id) is True
    assert await store.delete(gone.session_id) is False
    await store.save(gone)

    assert await store.get(gone.session_id) is None
    assert [s.session_id for s in await store.sessions()] == [kept.session_id]
    assert await store.get(kept.session_id) == kept


async def test_group_constraints_are_replaced_filtered_and_deleted(db: Database) -> None:
    store = MaintenanceStore(db)
    g1 = InstanceGroupConstraints(
        "g1",
        "p1",
        group_name="db",
        anti_affinity_group=True,
        max_instances_per_host=1,
        max_impacted_members=2,
        recovery_time=60,
        resource_mitigation=True,
        updated=10.0,
    )
    g2 = InstanceGroupConstraints("g2", "p1", updated=11.0)
    g3 = InstanceGroupConstraints("g3", "p2", updated=12.0)
    for g in (g3, g1, g2):
        await store.put_group(g)

    assert await store.get_group("g1") == g1
    assert await store.get_group("nope") is None
    assert await store.groups() == [g1, g2, g3]
    assert await store.groups("p1") == [g1, g2]

    # A put of the same group replaces it whole, its project included.
    moved = InstanceGroupConstraints("g1", "p2", group_name="db2", updated=20.0)
    await store.put_group(moved)
    assert await store.get_group("g1") == moved
    assert await store.groups("p1") == [g2]
    assert await store.groups("p2") == [moved, g3]

    assert await store.delete_group("g2") is True
    assert await store.delete_group("g2") is False
    assert await store.groups() == [moved, g3]


async def test_instance_constraints_are_replaced_filtered_and_deleted(db: Database) -> None:
    store = MaintenanceStore(db)
    vm1 = InstanceConstraints(
        "vm1",
        "p1",
        group_id="g1",
        instance_name="web-1",
        migration_type=LIVE_MIGRATE,
        max_interruption_time=30,
        resource_mitigation=True,
        lead_time=120,
        updated=10.0,
    )
    vm2 = InstanceConstraints("vm2", "p1", updated=11.0)
    vm3 = InstanceConstraints("vm3", "p2", group_id="g3", updated=12.0)
    for c in (vm2, vm3, vm1):
        await store.put_instance(c)

    assert await store.get_instance("vm1") == vm1
    assert await store.get_instance("nope") is None
    assert await store.instances() == [vm1, vm2, vm3]
    assert await store.instances("p1") == [vm1, vm2]

    replaced = InstanceConstraints("vm1", "p2", migration_type=OWN_ACTION, updated=20.0)
    await store.put_instance(replaced)
    assert await store.get_instance("vm1") == replaced
    assert await store.instances("p1") == [vm2]
    assert await store.instances("p2") == [replaced, vm3]

    assert await store.delete_instance("vm2") is True
    assert await store.delete_instance("vm2") is False
    assert await store.instances() == [replaced, vm3]


async def test_instances_by_ids_finds_those_that_have_constraints_among_many(
    db: Database,
) -> None:
    store = MaintenanceStore(db)
    # More than one IN list's worth on each side, so every chunk is looked at.
    stored = [InstanceConstraints(f"vm{i:04d}", f"p{i % 3}", updated=float(i)) for i in range(1200)]
    for c in stored:
        await store.put_instance(c)
    wanted = [c.instance_id for c in stored[::2]] + [f"unknown{i}" for i in range(700)]
    wanted += wanted[:50]  # asked twice: found once

    found = await store.instances_by_ids(wanted)

    assert found == {c.instance_id: c for c in stored[::2]}
    assert await store.instances_by_ids([]) == {}
