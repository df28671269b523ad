"""matches(): event_type patterns, all-terms semantics, typed comparisons, every operator."""

from __future__ import annotations

from typing import Any

import pytest

from opendoctor.core.model import (
    TRAIT_DATETIME,
    TRAIT_FLOAT,
    TRAIT_INT,
    TRAIT_STRING,
    NotificationEvent,
)
from opendoctor.notifier.rules import matches

from .helpers import make_alarm, make_event

S, N, F, D = TRAIT_STRING, TRAIT_INT, TRAIT_FLOAT, TRAIT_DATETIME


def term(field: str, op: str, value: Any, type_: str = "") -> dict[str, Any]:
    return {"field": field, "op": op, "value": value, "type": type_}


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("compute.instance.update", "compute.instance.update", True),
        ("compute.instance.update", "compute.instance.updated", False),
        ("compute.instance.update", "compute.instance.updat", False),
        ("compute.instance.*", "compute.instance.update", True),
        ("compute.instance.*", "compute.host.down", False),
        ("*", "anything.at.all", True),
        ("compute.*.down", "compute.host.down", True),
        ("compute.?ost.down", "compute.host.down", True),
        ("compute.?ost.down", "compute.hhost.down", False),
        ("[ch]ompute.x", "hompute.x", True),
        ("[!c]ompute.x", "compute.x", False),
        ("Compute.*", "compute.instance.update", False),  # case-sensitive
        ("compute.instance.UPDATE", "compute.instance.update", False),
    ],
)
def test_event_type_patterns(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(make_alarm(pattern), make_event(event_type)) is expected


def test_all_terms_must_hold() -> None:
    alarm = make_alarm(
        query=[term("traits.instance_id", "eq", "vm1"), term("traits.state", "eq", "error")]
    )
    assert matches(alarm, make_event(instance_id=(S, "vm1"), state=(S, "error")))
    assert not matches(alarm, make_event(instance_id=(S, "vm1"), state=(S, "active")))
    assert not matches(alarm, make_event(instance_id=(S, "vm2"), state=(S, "error")))


def test_no_query_matches_every_event_of_the_type() -> None:
    assert matches(make_alarm(), make_event())


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_a_missing_trait_never_holds(op: str) -> None:
    alarm = make_alarm(query=[term("traits.instance_id", op, "vm1")])
    assert not matches(alarm, make_event(state=(S, "error")))


@pytest.mark.parametrize(
    ("op", "trait", "value", "expected"),
    [
        ("eq", 5, "5", True),
        ("eq", 5, "6", False),
        ("ne", 5, "6", True),
        ("ne", 5, "5", False),
        ("lt", 5, "6", True),
        ("lt", 5, "5", False),
        ("le", 5, "5", True),
        ("le", 6, "5", False),
        ("gt", 6, "5", True),
        ("gt", 5, "5", False),
        ("ge", 5, "5", True),
        ("ge", 4, "5", False),
    ],
)
def test_every_operator_on_integers(op: str, trait: int, value: str, expected: bool) -> None:
    alarm = make_alarm(query=[term("traits.n", op, value)])
    assert matches(alarm, make_event(n=(N, trait))) is expected


@pytest.mark.parametrize(
    ("op", "trait", "value", "expected"),
    [
        ("eq", "b", "b", True),
        ("ne", "b", "b", False),
        ("lt", "a", "b", True),
        ("le", "b", "b", True),
        ("gt", "c", "b", True),
        ("ge", "a", "b", False),
    ],
)
def test_every_operator_on_strings(op: str, trait: str, value: str, expected: bool) -> None:
    alarm = make_alarm(query=[term("traits.s", op, value)])
    assert matches(alarm, make_event(s=(S, trait))) is expected


def test_auto_type_compares_numbers_as_numbers() -> None:
    alarm = make_alarm(query=[term("traits.n", "lt", "10")])
    assert matches(alarm, make_event(n=(N, 9)))  # 9 < 10, though "9" > "10"
    assert matches(alarm, make_event(n=(F, 9.5)))
    assert not matches(alarm, make_event(n=(N, 10)))
    assert matches(make_alarm(query=[term("traits.n", "eq", "5.0")]), make_event(n=(N, 5)))


def test_auto_type_compares_strings_as_strings() -> None:
    alarm = make_alarm(query=[term("traits.n", "lt", "10")])
    assert not matches(alarm, make_event(n=(S, "9")))  # "9" > "10" as text
    assert matches(alarm, make_event(n=(S, "1")))


def test_auto_type_against_a_number_trait_with_a_non_number_query_does_not_hold() -> None:
    alarm = make_alarm(query=[term("traits.n", "ne", "many")])
    assert not matches(alarm, make_event(n=(N, 5)))


def test_auto_type_datetimes() -> None:
    alarm = make_alarm(query=[term("traits.at", "gt", "2024-01-01T00:00:00")])
    assert matches(alarm, make_event(at=(D, "2024-01-01T00:00:01")))
    assert not matches(alarm, make_event(at=(D, "2023-12-31T23:59:59")))
    # An offset is honoured: 01:00+01:00 is midnight UTC.
    same = make_alarm(query=[term("traits.at", "eq", "2024-01-01T00:00:00")])
    assert matches(same, make_event(at=(D, "2024-01-01T01:00:00+01:00")))
    assert not matches(same, make_event(at=(D, "not a date")))


def test_declared_integer_converts_a_string_trait() -> None:
    alarm = make_alarm(query=[term("traits.n", "gt", "10", "integer")])
    assert matches(alarm, make_event(n=(S, "42")))
    assert not matches(alarm, make_event(n=(S, "9")))
    assert not matches(alarm, make_event(n=(S, "forty-two")))


def test_declared_float() -> None:
    alarm = make_alarm(query=[term("traits.load", "ge", "0.75", "float")])
    assert matches(alarm, make_event(load=(F, 0.8)))
    assert matches(alarm, make_event(load=(S, "1")))
    assert not matches(alarm, make_event(load=(F, 0.5)))


def test_declared_string_converts_a_number_trait() -> None:
    alarm = make_alarm(query=[term("traits.n", "eq", "5", "string")])
    assert matches(alarm, make_event(n=(N, 5)))
    lexical = make_alarm(query=[term("traits.n", "lt", "10", "string")])
    assert not matches(lexical, make_event(n=(N, 9)))


def test_declared_boolean() -> None:
    alarm = make_alarm(query=[term("traits.up", "eq", "yes", "boolean")])
    assert matches(alarm, make_event(up=(S, "true")))
    assert matches(alarm, make_event(up=(N, 1)))
    assert not matches(alarm, make_event(up=(S, "False")))
    assert not matches(alarm, make_event(up=(S, "perhaps")))


def test_declared_datetime() -> None:
    alarm = make_alarm(query=[term("traits.at", "lt", "2024-06-01T00:00:00Z", "datetime")])
    assert matches(alarm, make_event(at=(S, "2024-05-31T23:00:00")))
    assert not matches(alarm, make_event(at=(S, "2024-06-01T02:00:00+01:00")))


def test_event_type_as_a_query_field() -> None:
    alarm = make_alarm("compute.*", query=[term("event_type", "ne", "compute.host.down")])
    assert matches(alarm, make_event("compute.instance.update"))
    assert not matches(alarm, make_event("compute.host.down"))


def test_events_built_by_the_model_helper() -> None:
    event = NotificationEvent.build(
        "compute.instance.update", instance_id="vm1", state="error", vcpus=4
    )
    alarm = make_alarm(
        query=[
            term("traits.instance_id", "eq", "vm1", "string"),
            term("traits.vcpus", "ge", 2),
            term("traits.state", "eq", "error"),
        ]
    )
    assert matches(alarm, event)


def test_disabled_and_project_are_not_matches_concern() -> None:
    # matches() is about the rule; the index applies enabled and project.
    assert matches(make_alarm(enabled=False, project_id="other"), make_event())
