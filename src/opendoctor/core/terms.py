"""Alarm query terms: typed conversions, compiled terms, and whether a term holds.

A term compares in its declared type; with the "" (auto) type it compares in the type
of the event's trait, so numbers compare as numbers and strings as strings. A term on
a trait the event lacks, or whose values do not convert, does not hold. The index uses
the same conversions to file alarms under the values they wait for.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opendoctor.core.model import (
    TRAIT_DATETIME,
    TRAIT_FLOAT,
    TRAIT_INT,
    TRAIT_STRING,
    NotificationEvent,
)

OPS: dict[str, Callable[[Any, Any], bool]] = {
    name: getattr(operator, name) for name in ("lt", "le", "eq", "ne", "ge", "gt")
}

# Boolean spellings accepted by OpenStack's strict bool_from_string.
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


# --- conversions shared by matching and by the index --------------------------------------


def as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    # Aware datetimes compare as instants; a naive one is taken as UTC, as OpenStack does.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# Comparison domains: what both sides are converted to before the operator runs.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "string": str,
    "number": as_number,
    "boolean": as_bool,
    "datetime": as_datetime,
}
MODE_OF_TYPE = {
    "": "auto",
    "string": "string",
    "integer": "number",
    "float": "number",
    "boolean": "boolean",
    "datetime": "datetime",
}
_AUTO_DOMAIN = {TRAIT_INT: "number", TRAIT_FLOAT: "number", TRAIT_DATETIME: "datetime"}


def declared_value(text: str, type_: str) -> Any:
    """The query value in its declared type; ValueError names what is wrong."""
    if type_ == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if type_ == "float":
        number = as_number(text)
        if number is None:
            raise ValueError(f"{text!r} is not a finite float")
        return float(number)
    if type_ == "boolean":
        flag = as_bool(text)
        if flag is None:
            raise ValueError(f"{text!r} is not a boolean (true/false, yes/no, 1/0, on/off)")
        return flag
    if type_ == "datetime":
        when = as_datetime(text)
        if when is None:
            raise ValueError(f"{text!r} is not an ISO 8601 datetime")
        return when
    return text


# --- the compiled form ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Term:
    """One compiled query term."""

    field: str
    op: str
    value: str  # as given (Aodh keeps query values as text)
    type: str
    trait: str | None  # None: the term looks at the event_type
    mode: str  # auto | string | number | boolean | datetime
    wants: dict[str, Any]  # comparison domain -> the query value converted to it
    cmp: Callable[[Any, Any], bool]

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "op": self.op, "value": self.value, "type": self.type}

    def keys(self) -> list[Hashable]:
        """Every (domain, value) an event's trait could equal for this term to hold as `eq`."""
        return [(domain, want) for domain, want in self.wants.items()]


def compile_term(field: str, op: str, value: str, type_: str) -> Term:
    mode = MODE_OF_TYPE[type_]
    if mode == "auto":
        wants: dict[str, Any] = {"string": value}
        number, when = as_number(value), as_datetime(value)
        if number is not None:
            wants["number"] = number
        if when is not None:
            wants["datetime"] = when
    else:
        wants = {mode: declared_value(value, type_)}
    trait = None if field == "event_type" else field.removeprefix("traits.")
    return Term(field, op, value, type_, trait, mode, wants, OPS[op])


def compile_rule(rule: dict[str, Any]) -> tuple[str, list[Term]]:
    """(event_type, terms) from the stored `event_rule` JSON."""
    terms = [
        compile_term(q["field"], q.get("op", "eq"), str(q["value"]), q.get("type", ""))
        for q in rule.get("query", [])
    ]
    return str(rule.get("event_type", "*")), terms


def event_key(mode: str, code: int, value: Any) -> Hashable | None:
    """The (domain, value) of an event's trait as a term of `mode` compares it."""
    domain = _AUTO_DOMAIN.get(code, "string") if mode == "auto" else mode
    have = _CONVERT[domain](value)
    return None if have is None else (domain, have)


def is_pattern(event_type: str) -> bool:
    return "*" in event_type or "?" in event_type or "[" in event_type


def term_holds(term: Term, event: NotificationEvent) -> bool:
    if term.trait is None:
        code: int = TRAIT_STRING
        actual: Any = event.event_type
    else:
        trait = event.traits.get(term.trait)
        if trait is None:
            return False
        code, actual = trait.type, trait.value
    domain = _AUTO_DOMAIN.get(code, "string") if term.mode == "auto" else term.mode
    want = term.wants.get(domain)
    if want is None:
        return False
    have = _CONVERT[domain](actual)
    return have is not None and term.cmp(have, want)
