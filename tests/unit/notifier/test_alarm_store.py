"""AlarmStore on a real database (SQLite and PostgreSQL): round trips, history, bulk state
transitions."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from opendoctor.core.alarms import (
    CREATION,
    DELETION,
    RULE_CHANGE,
    STATE_TRANSITION,
    Alarm,
    HistoryEntry,
    Transition,
)
from opendoctor.notifier.rules import AlarmBody
from opendoctor.store.alarms import ALARMS, HISTORY, AlarmStore, _row
from opendoctor.store.db import Database
from tests.sql_trace import starting, statements

from .helpers import alarm_body


def new_alarm(alarm_id: str, **overrides: object) -> Alarm:
    body = AlarmBody.model_validate(alarm_body(**overrides))
    return body.to_alarm(alarm_id, "project-a", "user-a", "insufficient data", 1_700_000_000.5)


def entry(alarm: Alarm, type_: str, when: float, **detail: object) -> HistoryEntry:
    return HistoryEntry(
        alarm_id=alarm.alarm_id,
        type=type_,
        detail=dict(detail),
        timestamp=when,
        project_id="project-a",
        user_id="user-a",
        on_behalf_of=alarm.project_id,
        severity=alarm.severity,
    )


def transition(alarm_id: str, current: str, when: float, severity: str = "low") -> Transition:
    return Transition(
        alarm_id=alarm_id,
        previous="insufficient data",
        current=current,
        reason=f"went {current}",
        reason_data={"type": "event"},
        timestamp=when,
        project_id="project-a",
        user_id="user-a",
        severity=severity,
    )


async def test_insert_and_load_round_trip(store: AlarmStore) -> None:
    alarm = new_alarm(
        "a1",
        ok_actions=["log://"],
        event_rule={
            "event_type": "compute.*",
            "query": [
                {"field": "traits.instance_id", "op": "eq", "value": "vm1"},
                {"field": "traits.vcpus", "op": "ge", "value": 2, "type": "integer"},
                {
                    "field": "traits.at",
                    "op": "lt",
                    "value": "2024-01-01T00:00:00Z",
                    "type": "datetime",
                },
            ],
        },
    )
    await store.insert(alarm, [entry(alarm, CREATION, 1.0, name=alarm.name)])
    loaded = await store.load_all()
    assert loaded == [alarm]
    assert await store.get_many(["a1", "missing"]) == {"a1": alarm}
    assert await store.get_many(["missing"]) == {}


async def test_update_and_delete(store: AlarmStore) -> None:
    alarm = new_alarm("a1")
    await store.insert(alarm, [entry(alarm, CREATION, 1.0)])
    alarm.name, alarm.enabled, alarm.alarm_actions = "renamed", False, []
    await store.update(alarm, [entry(alarm, RULE_CHANGE, 2.0, name="renamed")])
    assert await store.load_all() == [alarm]
    await store.delete("a1", [entry(alarm, DELETION, 3.0)])
    assert await store.load_all() == []
    # History outlives the alarm, as in Aodh.
    assert [h["type"] for h in await store.history("a1")] == [DELETION, RULE_CHANGE, CREATION]


async def test_update_of_a_missing_alarm_raises(store: AlarmStore) -> None:
    with pytest.raises(KeyError):
        await store.update(new_alarm("ghost"), [])


async def test_history_is_newest_first_in_aodh_shape(store: AlarmStore) -> None:
    alarm = new_alarm("a1")
    await store.insert(alarm, [entry(alarm, CREATION, 10.0, name="vm-failure")])
    await store.record_transitions([transition("a1", "alarm", 20.0, "critical")])
    await store.record_transitions([transition("a1", "ok", 30.0, "critical")])
    history = await store.history("a1")
    assert [h["type"] for h in history] == [STATE_TRANSITION, STATE_TRANSITION, CREATION]
    newest = history[0]
    assert set(newest) == {
        "event_id",
        "alarm_id",
        "type",
        "detail",
        "timestamp",
        "project_id",
        "user_id",
        "on_behalf_of",
        "severity",
    }
    assert json.loads(newest["detail"]) == {"state": "ok", "transition_reason": "went ok"}
    assert newest["timestamp"] == "1970-01-01T00:00:30.000000"
    assert newest["on_behalf_of"] == "project-a"
    assert json.loads(history[2]["detail"]) == {"name": "vm-failure"}
    assert [h["type"] for h in await store.history("a1", limit=1)] == [STATE_TRANSITION]


async def test_record_transitions_in_bulk(store: AlarmStore, db: Database) -> None:
    alarms = [new_alarm(f"a{i}") for i in range(1000)]
    for alarm in alarms[:10]:
        await store.insert(alarm, [])
    async with db.engine.begin() as conn:
        # The rest in one go: this test is about transitions, not inserts.
        await conn.execute(ALARMS.insert(), [_row(a) for a in alarms[10:]])
    with statements(db) as seen:
        await store.record_transitions(
            [transition(f"a{i}", "alarm" if i % 2 else "ok", 100.0 + i) for i in range(1000)]
        )
    # One statement each for the states and the history, whatever the group's size.
    assert len(starting(seen, "UPDATE")) == 1, starting(seen, "UPDATE")
    assert len(starting(seen, "INSERT")) == 1, starting(seen, "INSERT")
    loaded = {a.alarm_id: a for a in await store.load_all()}
    assert loaded["a1"].state == "alarm"
    assert loaded["a2"].state == "ok"
    assert loaded["a999"].state_timestamp == 1099.0
    assert loaded["a999"].state_reason == "went alarm"
    async with db.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(HISTORY))
    assert count == 1000


async def test_record_transitions_is_all_or_nothing(store: AlarmStore) -> None:
    alarm = new_alarm("a1")
    await store.insert(alarm, [])
    broken = transition("a1", "alarm", 5.0, severity=None)  # type: ignore[arg-type]
    # SQLite says "NOT NULL constraint failed", PostgreSQL "violates not-null constraint".
    with pytest.raises(Exception, match=r"(?i)not[ -]null"):
        await store.record_transitions([transition("a1", "ok", 4.0), broken])
    (loaded,) = await store.load_all()
    assert loaded.state == "insufficient data"
    assert await store.history("a1") == []


async def test_record_no_transitions_is_a_no_op(store: AlarmStore) -> None:
    await store.record_transitions([])


async def test_transitions_of_one_alarm_apply_in_order(store: AlarmStore) -> None:
    await store.insert(new_alarm("a1"), [])
    await store.record_transitions([transition("a1", "alarm", 1.0), transition("a1", "ok", 2.0)])
    (loaded,) = await store.load_all()
    assert (loaded.state, loaded.state_timestamp) == ("ok", 2.0)


async def test_states_asked_at_the_same_time_are_read_in_one_query(
    store: AlarmStore, db: Database
) -> None:
    for alarm_id in ("a1", "a2"):
        await store.insert(new_alarm(alarm_id), [])
    await store.record_transitions([transition("a2", "alarm", 50.0)])
    with statements(db) as seen:
        first, second = await asyncio.gather(store.states(["a1"]), store.states(["a2", "gone"]))
    assert first == {"a1": ("insufficient data", "Not evaluated yet", 1_700_000_000.5)}
    assert second == {"a2": ("alarm", "went alarm", 50.0)}
    assert len(starting(seen, "SELECT")) == 1, starting(seen, "SELECT")
