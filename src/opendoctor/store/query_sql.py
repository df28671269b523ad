"""A query tree (`core.query`) as SQL: a WHERE clause and an ORDER BY, the same on
SQLite and PostgreSQL. Values are bound parameters, never text of the statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

from sqlalchemy import ColumnElement, and_, case, not_, or_

from opendoctor.core.query import Compare, Junction, Node, Order, first_shown_at

Columns = Mapping[str, ColumnElement[Any]]

_RANK = {"low": 0, "moderate": 1, "critical": 2}  # severity sorts by meaning, as in Aodh


def where(node: Node, columns: Columns, times: Set[str] = frozenset()) -> ColumnElement[bool]:
    """The tree as a condition; fields in `times` are times kept as epoch seconds."""
    if isinstance(node, Junction):
        parts = [where(p, columns, times) for p in node.parts]
        return and_(*parts) if node.op == "and" else or_(*parts)
    if not isinstance(node, Compare):
        return not_(where(node.part, columns, times))
    column, value = columns[node.field], node.value
    if node.field in times:
        return _time(node.op, column, value)
    if node.op == "in":
        return column.in_(list(value) if isinstance(value, tuple) else [value])
    # `=~` never reaches here: the parser refuses it where the store serves the query.
    ops: dict[str, Any] = {
        "=": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    result: ColumnElement[bool] = ops[node.op](value)
    return result


def _time(op: str, column: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    """A comparison of times as the API shows them (to the microsecond): a value (epoch
    microseconds) stands for the float times [low, high) shown as it."""
    if isinstance(value, tuple):
        return or_(*(_time("=", column, v) for v in value))
    low, high = first_shown_at(int(value)), first_shown_at(int(value) + 1)
    conditions: dict[str, ColumnElement[bool]] = {
        "=": and_(column >= low, column < high),
        "!=": or_(column < low, column >= high),
        "<": column < low,
        "<=": column < high,
        ">": column >= high,
        ">=": column >= low,
    }
    return conditions[op]


def sort_key(field: str, columns: Columns) -> ColumnElement[Any]:
    column = columns[field]
    if field == "severity":
        return case(_RANK, value=column, else_=-1)
    return column


def sort_keys(
    order: Order, columns: Columns, id_field: str
) -> list[tuple[ColumnElement[Any], bool]]:
    """The ORDER BY as (expression, descending) pairs, ending with the id (ascending) so
    that rows of equal keys come in the same order each time: a marker means one place."""
    keys = [(sort_key(field, columns), descending) for field, descending in order]
    keys.append((columns[id_field], False))
    return keys


def ordering(keys: Sequence[tuple[ColumnElement[Any], bool]]) -> list[ColumnElement[Any]]:
    return [k.desc() if descending else k.asc() for k, descending in keys]
