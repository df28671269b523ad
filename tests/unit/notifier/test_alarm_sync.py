"""Two processes' alarm services on one database: each takes up what the other changed.
Before each fault only the definition changes are read, never the state transitions (the
bulk of the history), and through their own index. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
import types
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from opendoctor.core.alarms import STATE_TRANSITION, Change
from opendoctor.core.egress import EgressPolicy
from opendoctor.core.identity import Identity
from opendoctor.core.model import TRAIT_STRING, NotificationEvent
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.settings import NotifierSettings
from opendoctor.notifier import alarms as alarms_module
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.delivery import Dispatcher
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.notifier import Notifier
from opendoctor.notifier.rules import AlarmBody
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.db import Database
from opendoctor.store.outbox import OutboxStore
from tests.sql_trace import statements
from tests.unit.notifier.helpers import INSTANCE, alarm_body, make_event

OWNER = Identity("project-a", "user-a")


async def test_changes_made_by_another_process_are_taken_up(store: AlarmStore) -> None:
    here = AlarmService(store, AlarmIndex())
    there = AlarmService(AlarmStore(store.db), AlarmIndex())
    await here.load()
    await there.load()

    created = await there.create(AlarmBody.model_validate(alarm_body()), OWNER)
    assert here.index.get(created.alarm_id) is None
    assert await here.sync() == 1
    # The new alarm now matches events here, as it would where it was created.
    event = make_event(instance_id=(1, INSTANCE), state=(1, "error"))
    assert [a.alarm_id for a in here.index.match(event)] == [created.alarm_id]
    assert await here.sync() == 0  # each change is taken up once

    # Fired over there (state alarm): not fired again here without repeat_actions.
    await there.set_state(created.alarm_id, "alarm", OWNER)
    await here.sync()
    alarm = here.index.get(created.alarm_id)
    assert alarm is not None and alarm.state == "alarm"
    # Re-armed over there: taken up in place (a state change needs no reload).
    await there.set_state(created.alarm_id, "ok", OWNER)
    assert await here.sync() == 0
    assert here.index.get(created.alarm_id) is alarm and alarm.state == "ok"

    await there.delete(created.alarm_id, OWNER)
    await here.sync()
    assert here.index.get(created.alarm_id) is None
    assert here.index.match(event) == []


class ReadSpy:
    """Keeps the history rows a store's `changes_since` returns."""

    def __init__(self, store: AlarmStore) -> None:
        self.rows: list[Change] = []
        self._read = store.changes_since

        async def changes_since(
            since: float, limit: int = 10_000, states: bool = True
        ) -> list[Change]:
            rows = await self._read(since, limit, states)
            self.rows.extend(rows)
            return rows

        store.changes_since = changes_since  # type: ignore[method-assign]

    def types(self) -> set[str]:
        return {row.type for row in self.rows}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[OutboxEntry] = []

    async def send(self, entry: OutboxEntry) -> None:
        self.sent.append(entry)


def _vm_alarm(instance: str) -> AlarmBody:
    return AlarmBody.model_validate(
        alarm_body(
            name=f"vm-failure-{instance}",
            alarm_actions=["http://127.0.0.1:9/failure"],
            event_rule={
                "event_type": "compute.instance.update",
                "query": [{"field": "traits.instance_id", "op": "eq", "value": instance}],
            },
        )
    )


def _fault(instances: Sequence[str], fault: str) -> list[NotificationEvent]:
    events = []
    for instance in instances:
        e = make_event(instance_id=(TRAIT_STRING, instance), state=(TRAIT_STRING, "error"))
        e.fault_id = fault
        events.append(e)
    return events


async def test_a_fault_takes_up_alarms_created_elsewhere_but_reads_no_state_transitions(
    db: Database,
) -> None:
    egress = EgressPolicy.of(["127.0.0.0/8"])
    index = AlarmIndex()
    here = AlarmService(AlarmStore(db), index, egress)
    there = AlarmService(AlarmStore(db), AlarmIndex(), egress)  # another API replica
    await here.load()
    await there.load()
    outbox = OutboxStore(db)
    recorder = Recorder()
    dispatcher = Dispatcher(outbox, {"http": recorder}, NotifierSettings())
    notifier = Notifier(index, here, outbox, dispatcher, shared=True)
    read = ReadSpy(here.store)
    try:
        # A storm's first fault fires 30 alarms here: 30 state transitions of our own.
        vms = [f"vm-{i}" for i in range(30)]
        fired = {(await there.create(_vm_alarm(vm), OWNER)).alarm_id for vm in vms}
        assert {e.alarm_id for e in await notifier.notify(_fault(vms, "fault-1"))} == fired
        # Over there, the owner re-arms one of them (a state transition of another process).
        rearmed = sorted(fired)[0]
        await there.set_state(rearmed, "ok", OWNER)

        # An alarm created over there just before the next fault fires at once...
        read.rows.clear()
        late = await there.create(_vm_alarm("vm-late"), OWNER)
        entries = await notifier.notify(_fault(["vm-late"], "fault-2"))
        assert [e.alarm_id for e in entries] == [late.alarm_id]
        assert {e.alarm_id for e in recorder.sent} == fired | {late.alarm_id}
        # ... and what that fault read of the history is the definition changes alone:
        # not the 31 state transitions within the overlap window (those grew fault after
        # fault in a storm, read again before every one).
        assert read.types() == {"creation"}, read.types()
        assert late.alarm_id in {row.alarm_id for row in read.rows}

        # The periodic sync still takes up every change, the re-arming included.
        read.rows.clear()
        await here.sync_since(time.time())
        assert STATE_TRANSITION in read.types()
        alarm = index.get(rearmed)
        assert alarm is not None and alarm.state == "ok"
    finally:
        await notifier.close()


async def test_a_sync_of_definitions_leaves_no_state_behind_for_the_full_one(
    store: AlarmStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No overlap: what the cursors alone keep is seen.
    monkeypatch.setattr(alarms_module, "SYNC_OVERLAP", 0.0)
    here = AlarmService(store, AlarmIndex())
    there = AlarmService(AlarmStore(store.db), AlarmIndex())
    first = await there.create(AlarmBody.model_validate(alarm_body()), OWNER)
    await here.load()
    await there.load()

    await there.set_state(first.alarm_id, "alarm", OWNER)  # a state change, then
    second = await there.create(AlarmBody.model_validate(alarm_body(name="later")), OWNER)
    await here.sync_since(time.time(), states=False)
    assert here.index.get(second.alarm_id) is not None
    alarm = here.index.get(first.alarm_id)
    assert alarm is not None and alarm.state == "insufficient data"  # not read yet

    # The full sync reads from where it stopped, not from where the other one did.
    await here.sync_since(time.time())
    assert alarm.state == "alarm"
    # A full sync covers a sync of definitions asked for before it began.
    read = ReadSpy(store)
    await here.sync_since(time.time() - 60, states=False)
    assert read.rows == []


async def test_the_definition_changes_are_read_through_their_own_index(
    db: Database, store: AlarmStore
) -> None:
    with statements(db) as seen:
        await store.changes_since(time.time() - 60, states=False)
    ((statement, parameters),) = [(s, p) for s, p in seen if "FROM alarm_history" in s]
    # A literal, as in the partial index's predicate: a bound value could not be matched
    # to it (SQLite's planner, PostgreSQL's generic plans).
    assert "'state transition'" in statement

    async with db.engine.connect() as conn:
        plan = await _plan(conn, statement, parameters)
    assert "ix_alarm_history_definitions" in plan, plan


async def _plan(conn: AsyncConnection, statement: str, parameters: Any) -> str:
    if conn.dialect.name == "sqlite":
        result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row[-1]) for row in result.all())
    # A handful of rows: a sequential scan would be cheaper. Whether the index can serve
    # the query is what is asked.
    await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    result = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
    return "\n".join(str(row[0]) for row in result.all())


async def test_a_quiet_sync_moves_its_window_on_and_reads_old_rows_no_more(
    store: AlarmStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows read once are not read again by every later sync while nothing changes
    (after a storm, that was thousands of rows per sync)."""
    here = AlarmService(store, AlarmIndex())
    there = AlarmService(AlarmStore(store.db), AlarmIndex())
    await here.load()
    created = await there.create(AlarmBody.model_validate(alarm_body()), OWNER)
    await there.set_state(created.alarm_id, "alarm", OWNER)
    # The rows are now older than the overlap: the syncs below run ten seconds later.
    later = types.SimpleNamespace(time=lambda: time.time() + 10.0)
    monkeypatch.setattr(alarms_module, "time", later)
    spy = ReadSpy(store)
    await here.sync()
    assert len(spy.rows) == 2  # created, fired: each read once
    assert here.index.get(created.alarm_id) is not None
    await here.sync()
    await here.sync()
    assert len(spy.rows) == 2  # the window moved past them


async def test_a_sync_reads_back_none_of_its_own_changes(store: AlarmStore) -> None:
    """What this process changed it applied as it wrote; its sync reads only the others'
    rows (a storm's ten thousand transitions were read back every second)."""
    here = AlarmService(store, AlarmIndex())
    there = AlarmService(AlarmStore(store.db), AlarmIndex())
    await here.load()
    await there.load()
    mine = [await here.create(AlarmBody.model_validate(alarm_body()), OWNER) for _ in range(3)]
    for alarm in mine:
        await here.set_state(alarm.alarm_id, "alarm", OWNER)
    theirs = await there.create(AlarmBody.model_validate(alarm_body()), OWNER)
    await there.set_state(theirs.alarm_id, "alarm", OWNER)

    spy = ReadSpy(store)
    assert await here.sync() == 1
    assert {row.alarm_id for row in spy.rows} == {theirs.alarm_id}
    taken = here.index.get(theirs.alarm_id)
    assert taken is not None and taken.state == "alarm"
    # The other process reads every row written here: six, created and fired.
    assert await there.sync() == 3
    assert all(
        (a := there.index.get(alarm.alarm_id)) is not None and a.state == "alarm" for alarm in mine
    )
