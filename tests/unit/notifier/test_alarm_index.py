"""AlarmIndex: the same answer as checking every alarm, without checking every alarm."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendoctor.core.alarms import Alarm
from opendoctor.core.model import (
    TRAIT_DATETIME,
    TRAIT_FLOAT,
    TRAIT_INT,
    TRAIT_STRING,
    NotificationEvent,
)
from opendoctor.core.terms import compile_term
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.rules import matches

from .helpers import make_alarm, make_event

# Small pools, so that drawn alarms and events often meet.
EVENT_TYPES = ["a.b", "a.c", "b.b"]
PATTERNS = ["a.*", "*", "?.b", "[ab].c", "[!a]*"]
TRAIT_NAMES = ["id", "n"]
PROJECTS = ["p1", "p2", "admin"]

# Query values valid for each declared type, chosen to collide across types
# ("5" is a string, a number and a boolean-ish value at once).
VALUES: dict[str, list[str]] = {
    "": ["x", "5", "5.0", "05", "10", "2.5", "1", "true", "2024-01-01T00:00:00", "a.b"],
    "string": ["x", "5", "10", "a.b"],
    "integer": ["5", "10", "1", "-1"],
    "float": ["5", "2.5", "10.0"],
    "boolean": ["true", "false", "1"],
    "datetime": ["2024-01-01T00:00:00", "2024-01-01T01:00:00+01:00"],
}
TRAIT_VALUES: list[tuple[int, Any]] = [
    (TRAIT_STRING, "x"),
    (TRAIT_STRING, "5"),
    (TRAIT_STRING, "true"),
    (TRAIT_STRING, "a.b"),
    (TRAIT_INT, 5),
    (TRAIT_INT, 10),
    (TRAIT_INT, 1),
    (TRAIT_FLOAT, 5.0),
    (TRAIT_FLOAT, 2.5),
    (TRAIT_DATETIME, "2024-01-01T00:00:00"),
    (TRAIT_DATETIME, "2024-01-01T00:00:00+00:00"),
]


TEMPLATE = make_alarm(alarm_id="template")


def build_alarm(
    alarm_id: str, event_type: str, query: list[dict[str, Any]], project_id: str, enabled: bool
) -> Alarm:
    """An alarm without the pydantic round trip (the drawn terms are valid by construction)."""
    alarm = Alarm(**{s: getattr(TEMPLATE, s) for s in Alarm.__slots__})
    alarm.alarm_id, alarm.event_type = alarm_id, event_type
    alarm.project_id, alarm.enabled = project_id, enabled
    alarm.query = [compile_term(t["field"], t["op"], t["value"], t["type"]) for t in query]
    return alarm


# Strategies are built once: building them per draw dominates the test's run time.
_TYPES = st.sampled_from(list(VALUES))
_VALUES = {type_: st.sampled_from(values) for type_, values in VALUES.items()}
_FIELDS = st.sampled_from([f"traits.{n}" for n in TRAIT_NAMES] + ["event_type"])
# eq is weighted up: it is what the index keys on.
_OPS = st.sampled_from(["eq", "eq", "eq", "ne", "lt", "le", "gt", "ge"])


@st.composite
def terms(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(_TYPES)
    return {"field": draw(_FIELDS), "op": draw(_OPS), "value": draw(_VALUES[type_]), "type": type_}


_ALARM_FIELDS = st.tuples(
    st.sampled_from(EVENT_TYPES + PATTERNS),
    st.lists(terms(), max_size=3),
    st.sampled_from(PROJECTS),
    st.sampled_from([True, True, True, False]),
)


@st.composite
def alarm_sets(draw: st.DrawFn) -> list[Alarm]:
    drawn = draw(st.lists(_ALARM_FIELDS, max_size=40))
    return [build_alarm(f"alarm-{i}", *fields) for i, fields in enumerate(drawn)]


_TRAITS = st.dictionaries(st.sampled_from(TRAIT_NAMES), st.sampled_from(TRAIT_VALUES), min_size=1)
_PROJECT = st.sampled_from([None, None, *PROJECTS])
_PROJECT_TRAIT = st.sampled_from(["project_id", "tenant_id"])
_EVENT_TYPE = st.sampled_from(EVENT_TYPES)


@st.composite
def events(draw: st.DrawFn) -> NotificationEvent:
    traits = draw(_TRAITS)
    project = draw(_PROJECT)
    if project is not None:
        traits[draw(_PROJECT_TRAIT)] = (TRAIT_STRING, project)
    return make_event(draw(_EVENT_TYPE), project=None, **traits)


def expected(alarms: list[Alarm], event: NotificationEvent) -> set[str]:
    # An event of no project is the infrastructure's: only the admin project hears of it.
    project = event.project_id or "admin"
    return {
        a.alarm_id for a in alarms if a.enabled and a.project_id == project and matches(a, event)
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alarm_sets(), st.lists(events(), min_size=1, max_size=5), st.data())
def test_index_agrees_with_checking_every_alarm(
    all_alarms: list[Alarm], evts: list[NotificationEvent], data: st.DataObject
) -> None:
    index = AlarmIndex()
    for alarm in all_alarms:
        index.add(alarm)
    # Removing and re-adding exercises the bookkeeping that removal depends on.
    removed = (
        data.draw(st.sets(st.sampled_from([a.alarm_id for a in all_alarms])))
        if all_alarms
        else set()
    )
    for alarm_id in removed:
        assert index.remove(alarm_id) is not None
    kept = [a for a in all_alarms if a.alarm_id not in removed]
    assert len(index) == len(kept)
    for event in evts:
        found = index.match(event)
        assert len(found) == len({a.alarm_id for a in found}), "an alarm came back twice"
        assert {a.alarm_id for a in found} == expected(kept, event)
    for alarm_id in removed:
        index.add(next(a for a in all_alarms if a.alarm_id == alarm_id))
    for event in evts:
        assert {a.alarm_id for a in index.match(event)} == expected(all_alarms, event)


def test_every_single_term_alarm_against_every_trait_value() -> None:
    # Exhaustive over the pools: each (type, value, op) term against each typed trait, so
    # that the index's keys agree with the comparison rules whatever the draw finds.
    all_alarms = [
        build_alarm(f"{type_}|{value}|{op}", "a.b", [t], "p1", True)
        for type_, values in VALUES.items()
        for value in values
        for op in ("eq", "ne", "lt", "ge")
        for t in [{"field": "traits.n", "op": op, "value": value, "type": type_}]
    ]
    index = AlarmIndex()
    for alarm in all_alarms:
        index.add(alarm)
    for code, value in TRAIT_VALUES:
        event = make_event("a.b", project="p1", n=(code, value))
        found = {a.alarm_id for a in index.match(event)}
        assert found == expected(all_alarms, event), (code, value)


def test_add_replaces_and_remove_empties() -> None:
    index = AlarmIndex()
    first = make_alarm("a.*", [{"field": "traits.id", "op": "eq", "value": "x"}], alarm_id="a1")
    index.add(first)
    event = make_event("a.b", id=(TRAIT_STRING, "x"))
    assert index.match(event) == [first]
    second = make_alarm("b.b", alarm_id="a1")
    index.add(second)
    assert len(index) == 1
    assert index.get("a1") is second
    assert index.match(event) == []
    assert index.match(make_event("b.b")) == [second]
    assert index.remove("a1") is second
    assert index.remove("a1") is None
    assert len(index) == 0
    assert index.match(make_event("b.b")) == []


def test_pattern_cache_follows_new_and_removed_patterns() -> None:
    index = AlarmIndex()
    event = make_event("compute.instance.update")
    assert index.match(event) == []
    wide = make_alarm("compute.*", alarm_id="wide")
    index.add(wide)
    assert index.match(event) == [wide]
    index.remove("wide")
    assert index.match(event) == []


def test_disabled_alarms_and_other_projects_do_not_match() -> None:
    index = AlarmIndex()
    mine = make_alarm(alarm_id="mine", project_id="p1")
    theirs = make_alarm(alarm_id="theirs", project_id="p2")
    off = make_alarm(alarm_id="off", project_id="p1", enabled=False)
    ops = make_alarm(alarm_id="ops", project_id="admin")
    for alarm in (mine, theirs, off, ops):
        index.add(alarm)
    assert index.match(make_event(project_id=(TRAIT_STRING, "p1"))) == [mine]
    assert index.match(make_event(tenant_id=(TRAIT_STRING, "p2"))) == [theirs]
    # An event that names no project (a switch) is the infrastructure's business: the
    # tenants' alarms on the same event type stay quiet.
    assert index.match(make_event(project=None)) == [ops]
    elsewhere = AlarmIndex(infrastructure_projects=["ops-team", "noc"])
    for alarm in (mine, theirs, ops):
        elsewhere.add(alarm)
    assert elsewhere.match(make_event(project=None)) == []


def test_an_alarm_keyed_on_a_crowded_value_is_filed_under_a_rarer_one() -> None:
    index = AlarmIndex()
    for i in range(50):
        query = [
            {"field": "traits.state", "op": "eq", "value": "error"},
            {"field": "traits.instance_id", "op": "eq", "value": f"vm{i}"},
        ]
        index.add(make_alarm(query=query, alarm_id=f"a{i}"))
    group = index._exact["compute.instance.update"]
    by_state = group.keyed.get(("state", "auto"), {})
    assert sum(len(v) for v in by_state.values()) <= 1
    event = make_event(instance_id=(TRAIT_STRING, "vm7"), state=(TRAIT_STRING, "error"))
    assert [a.alarm_id for a in index.match(event)] == ["a7"]


def test_one_hundred_thousand_alarms_one_per_instance() -> None:
    # Correctness at scale; the timing lives in the benchmark, not in a unit test.
    index = AlarmIndex()
    for i in range(100_000):
        query = [
            {"field": "traits.instance_id", "op": "eq", "value": f"vm-{i}", "type": ""},
            {"field": "traits.state", "op": "eq", "value": "error", "type": ""},
        ]
        index.add(build_alarm(f"alarm-{i}", "compute.instance.update", query, f"p{i % 100}", True))
    assert len(index) == 100_000
    group = index._exact["compute.instance.update"]
    assert not group.loose
    event = NotificationEvent.build(
        "compute.instance.update", instance_id="vm-4242", state="error", project_id="p42"
    )
    assert [a.alarm_id for a in index.match(event)] == ["alarm-4242"]
    event.traits["project_id"].value = "p43"
    assert index.match(event) == []
