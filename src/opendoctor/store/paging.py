"""Keyset paging: the page after a marker, by the marker row's own sort key.

Offsets shift while rows come and go; a marker (the id of the last row of the page
before) does not: the next page starts right after it, in the list's order, whatever
was added meanwhile.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, or_, select
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
