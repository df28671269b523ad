"""Keyset paging: the page after a marker, by the marker row's own sort key.

Offsets shift while rows come and go; a marker (the id of the last row of the page
before) does not: the next page starts right after it, in the list's order, whatever
was added meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


class UnknownMarker(LookupError):
    """The marker names no row of the list (deleted, or never there)."""


async def after_marker(
    session: AsyncSession,
    query: Select[Any],
    id_column: InstrumentedAttribute[str],
    key: InstrumentedAttribute[Any],
    marker: str | None,
    descending: bool,
) -> Select[Any]:
    """`query` (ordered by `key`, then by `id_column` ascending) narrowed to the rows
    after `marker`."""
    if marker is None:
        return query
    value = await session.scalar(select(key).where(id_column == marker))
    if value is None:
        raise UnknownMarker(marker)
    beyond = key < value if descending else key > value
    return query.where(or_(beyond, and_(key == value, id_column > marker)))


def after_row(
    keys: Sequence[tuple[ColumnElement[Any], bool]], values: Sequence[Any]
) -> ColumnElement[bool]:
    """The rows after the one whose sort keys are `values`, for a list ordered by `keys`
    ((expression, descending) pairs, the last one unique): beyond it on the first key,
    or equal on the first and beyond on the second, and so on."""
    clauses = []
    for i, (key, descending) in enumerate(keys):
        equal = [k == v for (k, _), v in zip(keys[:i], values[:i], strict=True)]
        beyond = key < values[i] if descending else key > values[i]
        clauses.append(and_(*equal, beyond))
    return or_(*clauses)
