"""Queries over the alarms, evaluated over the in-memory index: that is where alarms are
served from (the notification path matches events against it), and a project holds at
most `notifier.max_alarms_per_project` of them. History, which grows without such a
bound, is queried in the database (`store.alarms`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from opendoctor.core.alarms import Alarm
from opendoctor.core.errors import RequestError
from opendoctor.core.query import Compare, Junction, Kind, Node, Order, micros
from opendoctor.infra.regex import RegexError, searcher

# What the complex query filters on: Aodh's alarm fields, but for the rule, the actions
# and time constraints (lists and objects, which no operator of the query compares).
ALARM_FIELDS: dict[str, Kind] = {
    "alarm_id": "text",
    "name": "text",
    "description": "text",
    "type": "text",
    "enabled": "bool",
    "state": "text",
    "state_reason": "text",
    "state_timestamp": "time",
    "timestamp": "time",
    "severity": "text",
    "repeat_actions": "bool",
    "project_id": "text",
    "user_id": "text",
}
# What GET /v2/alarms filters on (op eq), as Aodh 23; `all_projects` is handled apart.
LIST_FIELDS: dict[str, Kind] = {
    name: ALARM_FIELDS[name]
    for name in (
        "alarm_id",
        "name",
        "type",
        "enabled",
        "state",
        "severity",
        "timestamp",
        "repeat_actions",
        "project_id",
        "user_id",
    )
}
ALARM_SORT = (
    "alarm_id",
    "enabled",
    "name",
    "type",
    "severity",
    "timestamp",
    "user_id",
    "project_id",
    "state",
    "repeat_actions",
    "state_timestamp",
)
DEFAULT_ORDER: Order = [("timestamp", True)]
# Severity sorts by its meaning, as Aodh does, not by its spelling.
SEVERITY_RANK = {"low": 0, "moderate": 1, "critical": 2}

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Test = Callable[[Alarm], bool]


def matcher(node: Node | None) -> Test:
    """The tree as one function of an alarm. Regular expressions are compiled here, once
    per query, by RE2 (linear time: a caller's pattern cannot stall the event loop)."""
    if node is None:
        return lambda _: True
    if isinstance(node, Junction):
        parts = [matcher(p) for p in node.parts]
        if node.op == "and":
            return lambda a: all(p(a) for p in parts)
        return lambda a: any(p(a) for p in parts)
    if not isinstance(node, Compare):
        inner = matcher(node.part)
        return lambda a: not inner(a)
    return _compare(node)


def _compare(term: Compare) -> Test:
    field, value = term.field, term.value
    if ALARM_FIELDS[field] == "time":
        return _compare_time(term)
    if term.op == "in":
        values = frozenset(value if isinstance(value, tuple) else (value,))
        return lambda a: getattr(a, field) in values
    if term.op == "=~":
        try:
            search = searcher(str(value))
        except RegexError as exc:
            raise RequestError(400, f"=~ on {field}: {exc}", "filter") from None
        return lambda a: search(getattr(a, field))
    compare = _OPS[term.op]
    return lambda a: bool(compare(getattr(a, field), value))


def _compare_time(term: Compare) -> Test:
    """Times compare to the microsecond: what the API shows and the caller sends back."""
    field, value = term.field, term.value
    if isinstance(value, tuple):
        values = frozenset(value)
        return lambda a: micros(getattr(a, field)) in values
    compare = _OPS[term.op]
    return lambda a: bool(compare(micros(getattr(a, field)), value))


def _key(field: str) -> Callable[[Alarm], Any]:
    if field == "severity":
        return lambda a: SEVERITY_RANK.get(a.severity, -1)
    return operator.attrgetter(field)


def ordered(alarms: Iterable[Alarm], order: Order) -> list[Alarm]:
    """Sorted by `order` (default: newest first), then by id: a page ends the same way
    each time it is asked for, so a marker means the same place."""
    out = sorted(alarms, key=operator.attrgetter("alarm_id"))
    for field, descending in reversed(order or DEFAULT_ORDER):  # stable: last key first
        out.sort(key=_key(field), reverse=descending)
    return out


def page(alarms: list[Alarm], limit: int | None, marker: str | None) -> list[Alarm]:
    """At most `limit` alarms, from the one after `marker` (an alarm id of this list)."""
    if marker is not None:
        at = next((i for i, a in enumerate(alarms) if a.alarm_id == marker), None)
        if at is None:
            raise RequestError(400, f"no alarm {marker} in this listing", "marker")
        alarms = alarms[at + 1 :]
    return alarms if limit is None else alarms[:limit]
