"""Failover segments and their hosts (Masakari's), for the API to edit and recovery to
read (`core.ports.SegmentSource`).

A host name belongs to at most one segment per service type: the database holds it to
that (a unique constraint on the name and the segment's service type), so two requests
at once cannot both add it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, case, delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from opendoctor.core.query import Order
from opendoctor.core.segments import Segment, SegmentHost, SegmentView
from opendoctor.store.db import Database
from opendoctor.store.paging import UnknownMarker, after_row
from opendoctor.store.query_sql import ordering, sort_keys
from opendoctor.store.tables import SegmentHostRow, SegmentRow

SEGMENTS = cast(Table, SegmentRow.__table__)
HOSTS = cast(Table, SegmentHostRow.__table__)
SEGMENT_COLUMNS = {c.name: c for c in SEGMENTS.c}
HOST_COLUMNS = {c.name: c for c in HOSTS.c}
# What a segment or host update may change (the rest is the record's identity).
SEGMENT_FIELDS = frozenset(
    {"name", "description", "recovery_method", "service_type", "enabled", "all_servers"}
)
HOST_FIELDS = frozenset({"name", "type", "control_attributes", "reserved", "on_maintenance"})
DEFAULT_ORDER: Order = [("created_at", True)]  # newest first, as Masakari


class Conflict(Exception):
    """The change would give a segment a name another has, or a host a name another
    host of the same service type has."""


def _segment(row: RowMapping) -> Segment:
    return Segment(
        name=row["name"],
        recovery_method=row["recovery_method"],
        service_type=row["service_type"],
        enabled=bool(row["enabled"]),
        description=row["description"],
        all_servers=bool(row["all_servers"]),
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _host(row: RowMapping) -> SegmentHost:
    return SegmentHost(
        name=row["name"],
        segment_id=row["segment_id"],
        type=row["type"],
        control_attributes=row["control_attributes"],
        reserved=bool(row["reserved"]),
        on_maintenance=bool(row["on_maintenance"]),
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _page(
    conn: AsyncConnection,
    table: Table,
    columns: Mapping[str, Any],
    filters: Mapping[str, Any],
    order: Order,
    limit: int | None,
    marker: str | None,
) -> list[RowMapping]:
    """Rows matching `filters` (column = value), in `order` then by id, after the row
    whose id is `marker` (`UnknownMarker` if the filters do not hold it)."""
    keys = sort_keys(order or DEFAULT_ORDER, columns, "id")
    conditions = [columns[name] == value for name, value in filters.items()]
    if marker is not None:
        at = select(*(k for k, _ in keys)).where(*conditions, table.c.id == marker)
        values = (await conn.execute(at)).first()
        if values is None:
            raise UnknownMarker(marker)
        conditions.append(after_row(keys, tuple(values)))
    query = select(table).where(*conditions).order_by(*ordering(keys))
    if limit is not None:
        query = query.limit(limit)
    return list((await conn.execute(query)).mappings())


class SegmentStore:
    """Segments and their hosts. Every write is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- segments ------------------------------------------------------------------------

    async def create(self, segment: Segment) -> Segment:
        segment.created_at = segment.created_at or time.time()
        values = {
            "id": segment.id,
            "name": segment.name,
            "description": segment.description,
            "recovery_method": segment.recovery_method,
            "service_type": segment.service_type,
            "enabled": segment.enabled,
            "all_servers": segment.all_servers,
            "created_at": segment.created_at,
            "updated_at": segment.updated_at,
        }
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(SEGMENTS).values(values))
        except IntegrityError:
            raise Conflict(f"a segment named {segment.name!r} exists") from None
        return segment

    async def get(self, segment_id: str) -> Segment | None:
        async with self.db.engine.connect() as conn:
            row = (
                (await conn.execute(select(SEGMENTS).where(SEGMENTS.c.id == segment_id)))
                .mappings()
                .first()
            )
        return None if row is None else _segment(row)

    async def segments(
        self,
        filters: Mapping[str, Any] | None = None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Segment]:
        """Segments whose columns equal `filters`, newest first unless `order` says
        otherwise, after the segment `marker` (`UnknownMarker`)."""
        async with self.db.engine.connect() as conn:
            rows = await _page(
                conn, SEGMENTS, SEGMENT_COLUMNS, filters or {}, order or [], limit, marker
            )
        return [_segment(r) for r in rows]

    async def update(self, segment_id: str, changes: Mapping[str, Any]) -> Segment:
        """Change the fields in `changes` (of `SEGMENT_FIELDS`); `KeyError` if there is no
        such segment, `Conflict` if a name is taken. A new service type moves the
        segment's hosts with it, and is a `Conflict` where one's name is taken there."""
        values = {k: v for k, v in changes.items() if k in SEGMENT_FIELDS}
        values["updated_at"] = time.time()
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(
                    update(SEGMENTS).where(SEGMENTS.c.id == segment_id).values(**values)
                )
                if result.rowcount == 0:
                    raise KeyError(segment_id)
                if "service_type" in values:
                    await conn.execute(
                        update(HOSTS)
                        .where(HOSTS.c.segment_id == segment_id)
                        .values(service_type=values["service_type"])
                    )
                row = (
                    (await conn.execute(select(SEGMENTS).where(SEGMENTS.c.id == segment_id)))
                    .mappings()
                    .one()
                )
        except IntegrityError:
            raise Conflict(
                "the name is another segment's, or a host of this segment is in another "
                "segment of that service type"
            ) from None
        return _segment(row)

    async def delete(self, segment_id: str) -> bool:
        """Delete a segment and its hosts; False if there was no such segment."""
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(HOSTS).where(HOSTS.c.segment_id == segment_id))
            result = await conn.execute(delete(SEGMENTS).where(SEGMENTS.c.id == segment_id))
        return bool(result.rowcount)

    # --- hosts ---------------------------------------------------------------------------

    async def add_host(self, host: SegmentHost) -> SegmentHost:
        """`KeyError` if the segment is not there, `Conflict` if a host of that name is
        in a segment of the same service type."""
        host.created_at = host.created_at or time.time()
        try:
            async with self.db.engine.begin() as conn:
                service_type = await conn.scalar(
                    select(SEGMENTS.c.service_type).where(SEGMENTS.c.id == host.segment_id)
                )
                if service_type is None:
                    raise KeyError(host.segment_id)
                await conn.execute(insert(HOSTS).values(_host_row(host, service_type)))
        except IntegrityError:
            raise Conflict(
                f"host {host.name!r} is in a segment of this service type already"
            ) from None
        return host

    async def host(self, segment_id: str, host_id: str) -> SegmentHost | None:
        query = select(HOSTS).where(HOSTS.c.id == host_id, HOSTS.c.segment_id == segment_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _host(row)

    async def hosts(
        self,
        segment_id: str,
        filters: Mapping[str, Any] | None = None,
        order: Order | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[SegmentHost]:
        where = {**(filters or {}), "segment_id": segment_id}
        async with self.db.engine.connect() as conn:
            rows = await _page(conn, HOSTS, HOST_COLUMNS, where, order or [], limit, marker)
        return [_host(r) for r in rows]

    async def update_host(
        self, segment_id: str, host_id: str, changes: Mapping[str, Any]
    ) -> SegmentHost:
        """`KeyError` if the segment has no such host, `Conflict` if the new name is
        taken in the service type."""
        values = {k: v for k, v in changes.items() if k in HOST_FIELDS}
        values["updated_at"] = time.time()
        where = (HOSTS.c.id == host_id) & (HOSTS.c.segment_id == segment_id)
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(update(HOSTS).where(where).values(**values))
                if result.rowcount == 0:
                    raise KeyError(host_id)
                row = (await conn.execute(select(HOSTS).where(where))).mappings().one()
        except IntegrityError:
            raise Conflict(
                f"host {values.get('name')!r} is in a segment of this service type already"
            ) from None
        return _host(row)

    async def delete_host(self, segment_id: str, host_id: str) -> bool:
        where = (HOSTS.c.id == host_id) & (HOSTS.c.segment_id == segment_id)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(HOSTS).where(where))
        return bool(result.rowcount)

    # --- what recovery reads (core.ports.SegmentSource) ------------------------------------

    async def segment_of(self, host: str) -> SegmentView | None:
        """The segment `host` is in, with all its hosts. A host in segments of several
        service types: its COMPUTE segment (any case), else the oldest."""
        compute_first = case((SEGMENTS.c.service_type.ilike("compute"), 0), else_=1)
        query = (
            select(SEGMENTS)
            .join(HOSTS, HOSTS.c.segment_id == SEGMENTS.c.id)
            .where(HOSTS.c.name == host)
            .order_by(compute_first, SEGMENTS.c.created_at, SEGMENTS.c.id)
            .limit(1)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return None
            hosts = await conn.execute(
                select(HOSTS).where(HOSTS.c.segment_id == row["id"]).order_by(HOSTS.c.name)
            )
            return SegmentView(_segment(row), [_host(h) for h in hosts.mappings()])

    async def set_reserved(self, segment_id: str, host: str, reserved: bool) -> None:
        where = (HOSTS.c.segment_id == segment_id) & (HOSTS.c.name == host)
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(HOSTS).where(where).values(reserved=reserved, updated_at=time.time())
            )


def _host_row(host: SegmentHost, service_type: str) -> dict[str, Any]:
    return {
        "id": host.id,
        "segment_id": host.segment_id,
        "name": host.name,
        "service_type": service_type,
        "type": host.type,
        "control_attributes": host.control_attributes,
        "reserved": host.reserved,
        "on_maintenance": host.on_maintenance,
        "created_at": host.created_at,
        "updated_at": host.updated_at,
    }
