"""Aodh's queries over alarms and their history, parsed once and bounded: the complex
query (`POST /v2/query/...`: a JSON filter of `=`, `!=`, `<`, `<=`, `>`, `>=`, `in`,
`=~`, `and`, `or`, `not`, an `orderby` list) and the simple one (`q.field`/`q.op`/
`q.value`, `sort=key:dir`) both become one tree, which the alarm index evaluates in
memory and the history store compiles to SQL.

Values are converted here, to the kind of their field, so that whoever evaluates the
tree compares like with like: text with text, booleans with booleans, times (ISO 8601
in the API, naive means UTC as in Aodh) as the microseconds the API shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from opendoctor.core.errors import RequestError
from opendoctor.core.terms import as_bool, as_datetime

Kind = Literal["text", "bool", "time"]
Value = str | bool | int  # text, a flag, a time in epoch microseconds

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
# Aodh takes these spellings too, and any case of every operator.
_SYNONYMS = {"=<": "<=", "=>": ">="}
SIMPLE_OPS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

# Bounds of one query: every term is evaluated against every alarm a caller may see
# (or compiled into one SQL statement), so a query's size is its cost.
MAX_TERMS = 64  # comparisons in one filter
MAX_DEPTH = 8  # and/or/not nested in one another
MAX_IN = 100  # values of one `in`
MAX_ORDERBY = 8  # sort keys
MAX_VALUE = 4096  # characters of one value (a description is at most that long)
ALIASES = {"user": "user_id", "project": "project_id"}  # as Aodh's complex query


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`; op is one of COMPARISONS, "in" (value: a tuple) or "=~"."""

    op: str
    field: str
    value: Value | tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Junction:
    op: Literal["and", "or"]
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    part: Node


Node = Compare | Junction | Negation
Order = list[tuple[str, bool]]  # (field, descending)


def _field(name: str) -> str:
    return ALIASES.get(name, name)


def _bad(where: str, problem: str, field: str = "filter") -> RequestError:
    return RequestError(400, f"{where}: {problem}" if where else problem, field)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros(value: float) -> int:
    """Epoch seconds to the microsecond, exactly as the API shows them (`model.iso`):
    times are kept as floats and shown rounded, and a query compares what callers saw,
    so `>= t` holds for the alarm shown at t."""
    return (datetime.fromtimestamp(value, UTC) - _EPOCH) // _MICRO


def first_shown_at(us: int) -> float:
    """The smallest float time that is shown as `us` microseconds or later: the bound a
    database compares its float column with. A microsecond spans a handful of floats
    at today's epoch, so a few steps find it."""
    t = us / 1_000_000
    for _ in range(64):
        if micros(t) < us:
            break
        t = math.nextafter(t, -math.inf)
    for _ in range(128):
        if micros(t) >= us:
            return t
        t = math.nextafter(t, math.inf)
    raise ValueError(f"no float time is shown as {us} microseconds")  # not reached


def to_time(value: Any) -> int:
    """ISO 8601 text as epoch microseconds; a time without a zone is UTC."""
    if not isinstance(value, str):
        raise ValueError(f"a time is ISO 8601 text such as 2024-01-31T12:00:00, not {value!r}")
    moment = as_datetime(value)
    if moment is None:
        raise ValueError(f"{value!r} is not an ISO 8601 time")
    return (moment - _EPOCH) // _MICRO


def convert(kind: Kind, value: Any) -> Value:
    """A value as the field's kind holds it; ValueError says why it cannot be."""
    if kind == "bool":
        flag = as_bool(value)
        if flag is None:
            raise ValueError(f"takes true or false, not {value!r}")
        return flag
    if kind == "time":
        return to_time(value)
    if not isinstance(value, str):
        raise ValueError(f"takes a string, not {value!r}")
    if len(value) > MAX_VALUE:
        raise ValueError(f"a value of {len(value)} characters, over {MAX_VALUE}")
    return value


class FilterParser:
    """Parses one complex query filter over `fields` (name -> kind)."""

    def __init__(self, fields: Mapping[str, Kind], regex: bool) -> None:
        self.fields = fields
        self.regex = regex  # whether `=~` is served here
        self.terms = 0

    def parse(self, text: str) -> Node:
        try:
            tree = orjson.loads(text)  # orjson refuses nesting past its own bound
        except orjson.JSONDecodeError as exc:
            raise _bad("", f"the filter is not valid JSON: {exc}") from None
        return self._node(tree, "", 0)

    def _node(self, tree: Any, where: str, depth: int) -> Node:
        if not isinstance(tree, dict) or len(tree) != 1:
            raise _bad(where, "each expression is an object of exactly one operator")
        if depth > MAX_DEPTH:
            raise _bad(where, f"and/or/not nest deeper than {MAX_DEPTH} levels")
        key, operand = next(iter(tree.items()))
        op = _SYNONYMS.get(key.lower(), key.lower())
        here = f"{where}.{key}" if where else key
        if op in ("and", "or"):
            if not isinstance(operand, list) or len(operand) < 2:
                raise _bad(here, f"'{op}' takes a list of at least two expressions")
            parts = tuple(self._node(p, f"{here}[{i}]", depth + 1) for i, p in enumerate(operand))
            return Junction(op, parts)
        if op == "not":
            return Negation(self._node(operand, here, depth + 1))
        if op not in (*COMPARISONS, "in", "=~"):
            known = ", ".join([*COMPARISONS, "in", "=~", "and", "or", "not"])
            raise _bad(here, f"unknown operator {key!r}; use one of {known}")
        if op == "=~" and not self.regex:
            raise _bad(here, "'=~' (regular expressions) is served on alarms, not on history")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _bad(here, f"a filter has at most {MAX_TERMS} comparisons")
        if not isinstance(operand, dict) or len(operand) != 1:
            raise _bad(here, "a comparison is an object of one field and its value")
        name, raw = next(iter(operand.items()))
        field = _field(name)
        kind = self.fields.get(field)
        if kind is None:
            raise _bad(here, f"cannot filter on {name!r}; use one of {', '.join(self.fields)}")
        where = f"{here}.{name}"
        try:
            if op == "in":
                if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IN:
                    raise ValueError(f"'in' takes a list of 1 to {MAX_IN} values")
                return Compare(op, field, tuple(convert(kind, v) for v in raw))
            if op == "=~" and kind != "text":
                raise ValueError("'=~' applies to text fields only")
            return Compare(op, field, convert(kind, raw))
        except ValueError as exc:
            raise _bad(where, str(exc)) from None


def parse_filter(text: str, fields: Mapping[str, Kind], regex: bool = False) -> Node:
    return FilterParser(fields, regex).parse(text)


def parse_orderby(text: str, sortable: Sequence[str]) -> Order:
    """`[{"field": "asc"|"desc"}, ...]` (any case) as (field, descending) pairs."""
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _bad("", f"orderby is not valid JSON: {exc}", "orderby") from None
    if not isinstance(items, list):
        raise _bad("", 'orderby is a list such as [{"timestamp": "desc"}]', "orderby")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise _bad(f"[{i}]", "each item is an object of one field", "orderby")
        ((name, direction),) = item.items()
        pairs.append((_field(name), direction))
    return _order(pairs, sortable, "orderby")


def parse_sort(items: Sequence[str], sortable: Sequence[str]) -> Order:
    """The simple query's `sort=key[:asc|desc]` parameters (asc when omitted)."""
    pairs = []
    for item in items:
        key, _, direction = item.partition(":")
        pairs.append((key, direction or "asc"))
    return _order(pairs, sortable, "sort")


def _order(pairs: Sequence[tuple[str, Any]], sortable: Sequence[str], where: str) -> Order:
    if len(pairs) > MAX_ORDERBY:
        raise _bad("", f"at most {MAX_ORDERBY} sort keys", where)
    order: Order = []
    for i, (field, direction) in enumerate(pairs):
        if field not in sortable:
            problem = f"cannot sort by {field!r}; use one of {', '.join(sortable)}"
            raise _bad(f"[{i}]", problem, where)
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise _bad(f"[{i}]", f"the direction is asc or desc, not {direction!r}", where)
        if any(field == seen for seen, _ in order):
            raise _bad(f"[{i}]", f"{field!r} is named twice", where)
        order.append((field, direction.lower() == "desc"))
    return order


def simple_query(
    triples: Sequence[tuple[str, str, str]],
    fields: Mapping[str, Kind],
    ops_of: Mapping[str, Sequence[str]] | None = None,
) -> Node | None:
    """The simple query (q.field/q.op/q.value, every term must hold) as a tree. Each
    field takes the operators `ops_of` names for it, `eq` alone when it names none."""
    if len(triples) > MAX_TERMS:
        raise RequestError(400, f"at most {MAX_TERMS} terms, not {len(triples)}", "q")
    parts: list[Node] = []
    for i, (name, op, raw) in enumerate(triples):
        kind = fields.get(name)
        if kind is None:
            problem = f"cannot filter on {name!r} (term {i}); use one of {', '.join(fields)}"
            raise RequestError(400, problem, "q.field")
        ops = (ops_of or {}).get(name, ("eq",))
        if op not in ops:
            problem = f"{op!r} (term {i}) on {name!r}: use one of {', '.join(ops)}"
            raise RequestError(400, problem, "q.op")
        try:
            value = convert(kind, raw)
        except ValueError as exc:
            raise RequestError(400, f"{name!r} (term {i}) {exc}", "q.value") from None
        parts.append(Compare(SIMPLE_OPS[op], name, value))
    return both(*parts)


def both(*parts: Node | None) -> Node | None:
    """Every one of these parts (None: no condition) must hold."""
    given = tuple(p for p in parts if p is not None)
    if not given:
        return None
    return given[0] if len(given) == 1 else Junction("and", given)


def compares(node: Node | None, visit: Callable[[Compare], None]) -> None:
    """Calls `visit` with every comparison of the tree."""
    if isinstance(node, Compare):
        visit(node)
    elif isinstance(node, Junction):
        for part in node.parts:
            compares(part, visit)
    elif isinstance(node, Negation):
        compares(node.part, visit)


def only_own(node: Node | None, field: str, project: str, where: str = "filter") -> None:
    """A caller who is not an admin may not name another project in `field` (Aodh
    refuses rather than answer an empty list that would look like "nothing there")."""

    def check(term: Compare) -> None:
        values = term.value if isinstance(term.value, tuple) else (term.value,)
        if term.field == field and any(v != project for v in values):
            raise RequestError(403, f"only an admin may query another project's {field}", where)

    compares(node, check)
