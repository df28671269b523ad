"""A JSON filter over entity-graph vertices, for ``GET /v1/topology?query=<json>``.

A query is a tree of JSON objects, each with exactly one key, the operator::

    {"==": {"type": "server"}}
    {"and": [{"==": {"type": "server"}}, {"in": {"state": ["error", "suboptimal"]}}]}
    {"or": [{"regex": {"name": "^vm-1"}}, {"exists": "props.rack"}]}
    {"not": {">=": {"updated": 1700000000}}}
    {"<": {"props.cores": 8}}

``and`` and ``or`` take a non-empty list of queries, ``not`` one query. ``==``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, ``in`` and ``regex`` take an object with exactly one field:
its value (``in``: a list of values; ``regex``: a pattern, searched with RE2).
``exists`` takes a field name and is true when the field is there and not null.

Fields: key, category, type, id, name, project, raw_state, state (the aggregated state),
deduced_state, placeholder (bool), created, updated (epoch seconds) and ``props.<name>``
(null when missing). Values must suit the field: a string (or null) for the string fields,
true/false for placeholder, a number for the dates, any scalar for a prop. ``==``, ``!=`` and
``in`` on state and category ignore case; everything else, regex included, is exact (write
``(?i)`` in the pattern). Ordering works on created, updated and props, with a number; a
prop that is not a number never matches it. At most 32 levels and 1000 operators.

The query is checked and compiled into closures once, so a bad one fails as a whole with
`QueryError` (naming the culprit's JSON path) before any vertex is looked at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import attrgetter, ge, gt, le, lt
from typing import Any

from opendoctor.infra.regex import RegexError, searcher
from opendoctor.inspector.graph.model import Vertex

Predicate = Callable[[Vertex], bool]
Getter = Callable[[Vertex], Any]

MAX_DEPTH = 32
MAX_NODES = 1000

# A field's kind decides at compile time which operators and values it accepts, so that a
# mistyped query is refused instead of silently matching nothing.
STR, OPT_STR, NUM, BOOL, PROP = "string", "string-or-null", "number", "boolean", "scalar"
FIELDS: dict[str, str] = (
    dict.fromkeys(("key", "category", "type", "id", "state"), STR)
    | dict.fromkeys(("name", "project", "raw_state", "deduced_state"), OPT_STR)
    | {"placeholder": BOOL, "created": NUM, "updated": NUM}
)
_ATTRS = {"state": "aggregated_state"}
# Normalized states and categories are upper case, but operators type "error".
_CASELESS = frozenset({"state", "category"})
_ORDER: dict[str, Callable[[Any, Any], bool]] = {"<": lt, "<=": le, ">": gt, ">=": ge}
_COMPARE = ("==", "!=", *_ORDER, "in", "regex")
OPERATORS = ("and", "or", "not", *_COMPARE, "exists")


class QueryError(ValueError):
    """A query that cannot be compiled; `field` is the JSON path of the culprit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_query(text: str) -> Predicate:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep JSON
        raise QueryError(f"not valid JSON: {exc}", "query") from None
    return compile_query(data)


def compile_query(data: object, path: str = "query") -> Predicate:
    return _Compiler().node(data, path, 1)


def _no_constant(name: str) -> None:
    # json accepts NaN and Infinity, which are not JSON and make every ordering false.
    raise ValueError(f"{name} is not allowed")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _accepts(kind: str, value: object) -> bool:
    if kind == NUM:
        return _is_number(value)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == STR:
        return isinstance(value, str)
    if kind == OPT_STR:
        return value is None or isinstance(value, str)
    return value is None or isinstance(value, str | int | float)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _tag(value: object) -> tuple[bool, object]:
    # Props hold any JSON; Python alone would say True == 1 and match a flag with a count.
    return value.__class__ is bool, value


def _field(name: object, path: str) -> tuple[Getter, str]:
    if isinstance(name, str):
        if name in FIELDS:
            return attrgetter(_ATTRS.get(name, name)), FIELDS[name]
        if name.startswith("props.") and len(name) > len("props."):
            prop = name[len("props.") :]

            def get_prop(v: Vertex) -> Any:
                return v.props.get(prop) if v.props else None

            return get_prop, PROP
    valid = ", ".join([*FIELDS, "props.<name>"])
    raise QueryError(f"unknown field {name!r}; valid fields: {valid}", path)


def _compare(op: str, name: str, value: object, path: str) -> Predicate:
    get, kind = _field(name, path)
    if op == "regex":
        if kind not in (STR, OPT_STR, PROP):
            raise QueryError(f"regex needs a string field; {name!r} is a {kind} field", path)
        if not isinstance(value, str):
            raise QueryError(f"regex needs a pattern string, got {_describe(value)}", path)
        try:
            search = searcher(value)
        except RegexError as exc:
            raise QueryError(f"invalid regular expression {value!r}: {exc}", path) from None
        return lambda v: isinstance(s := get(v), str) and search(s)
    if op in _ORDER:
        if kind not in (NUM, PROP):
            raise QueryError(
                f"{op!r} compares numbers: {name!r} is a {kind} field "
                "(numeric fields: created, updated, props.<name>)",
                path,
            )
        if not _is_number(value):
            raise QueryError(f"{op!r} needs a number, got {_describe(value)}", path)
        order = _ORDER[op]
        if kind == NUM:
            return lambda v: order(get(v), value)
        return lambda v: _is_number(x := get(v)) and order(x, value)
    if op == "in" and not isinstance(value, list):
        raise QueryError(f"'in' needs a list of values, got {_describe(value)}", path)
    values: list[Any] = value if isinstance(value, list) and op == "in" else [value]
    for i, item in enumerate(values):
        if not _accepts(kind, item):
            where = f"{path}[{i}]" if op == "in" else path
            raise QueryError(f"{name!r} is a {kind} field, got {_describe(item)}", where)
    if kind == PROP and op != "in":
        flag = isinstance(value, bool)

        def same(v: Vertex) -> bool:  # _tag's rule, without building tuples per vertex
            x = get(v)
            return bool(x == value) and (x.__class__ is bool) is flag

        return same if op == "==" else lambda v: not same(v)
    norm = str.casefold if name in _CASELESS else _tag if kind == PROP else None
    if norm is not None:
        get = _mapped(get, norm)
        values = [norm(item) for item in values]
    if op == "in":
        members = frozenset(values)

        def member(v: Vertex) -> bool:
            try:
                return get(v) in members
            except TypeError:  # an unhashable prop (list, dict) is in no list of scalars
                return False

        return member
    target = values[0]
    if op == "==":
        return lambda v: get(v) == target
    return lambda v: get(v) != target


def _mapped(get: Getter, norm: Callable[[Any], Any]) -> Getter:
    return lambda v: norm(get(v))


# Plain loops: all()/any() over a generator are twice as slow on this per-vertex path.
def _all(preds: tuple[Predicate, ...]) -> Predicate:
    def every(v: Vertex) -> bool:
        for p in preds:  # noqa: SIM110
            if not p(v):
                return False
        return True

    return every


def _any(preds: tuple[Predicate, ...]) -> Predicate:
    def some(v: Vertex) -> bool:
        for p in preds:  # noqa: SIM110
            if p(v):
                return True
        return False

    return some


class _Compiler:
    def __init__(self) -> None:
        self.nodes = 0  # across the whole tree: a wide query is as costly as a deep one

    def node(self, data: object, path: str, depth: int) -> Predicate:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise QueryError(f"query has more than {MAX_NODES} operators", path)
        if depth > MAX_DEPTH:
            raise QueryError(f"query is nested deeper than {MAX_DEPTH} levels", path)
        if not isinstance(data, dict) or len(data) != 1:
            got = f"{len(data)} keys" if isinstance(data, dict) else _describe(data)
            raise QueryError(
                f"expected an object with exactly one operator ({', '.join(OPERATORS)}), got {got}",
                path,
            )
        ((op, arg),) = data.items()
        here = f"{path}.{op}"
        if op in ("and", "or"):
            if not isinstance(arg, list) or not arg:
                got = "an empty list" if arg == [] else _describe(arg)
                raise QueryError(f"{op!r} needs a non-empty list of queries, got {got}", here)
            preds = tuple(self.node(q, f"{here}[{i}]", depth + 1) for i, q in enumerate(arg))
            if len(preds) == 1:
                return preds[0]
            return _all(preds) if op == "and" else _any(preds)
        if op == "not":
            inner = self.node(arg, here, depth + 1)
            return lambda v: not inner(v)
        if op == "exists":
            get, _ = _field(arg, here)
            return lambda v: get(v) is not None
        if op not in _COMPARE:
            raise QueryError(f"unknown operator {op!r}; valid: {', '.join(OPERATORS)}", here)
        if not isinstance(arg, dict) or len(arg) != 1:
            got = f"{len(arg)} fields" if isinstance(arg, dict) else _describe(arg)
            raise QueryError(
                f"{op!r} needs an object with exactly one field, "
                f'such as {{"{op}": {{"name": ...}}}}, got {got}',
                here,
            )
        ((name, value),) = arg.items()
        return _compare(op, name, value, f"{here}.{name}")
