"""Planned-maintenance sessions and the owners' constraints on their instances and
groups (`core.maintenance`), for the maintenance engine and the Fenix API.

Each record is one JSON document (text, so both engines store it alike); the columns
beside it are copies of what is filtered or ordered on, written with it in one statement
so they never disagree with the document.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection
from typing import Any, cast

import orjson
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.sql import Select

from opendoctor.core.maintenance import (
    ENDED,
    InstanceConstraints,
    InstanceGroupConstraints,
    Session,
)
from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.tables import (
    MaintenanceInstanceGroupRow,
    MaintenanceInstanceRow,
    MaintenanceSessionRow,
)

SESSIONS = cast(Table, MaintenanceSessionRow.__table__)
GROUPS = cast(Table, MaintenanceInstanceGroupRow.__table__)
INSTANCES = cast(Table, MaintenanceInstanceRow.__table__)
# Sorted: the same statement text every time, so the drivers' statement caches hit.
_ENDED = sorted(ENDED)
# Bounds an IN list: SQLite caps a statement's parameters, and long lists plan badly.
_CHUNK = 500


def _dumps(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def _session_row(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "state": session.state,
        "created": session.created,
        "updated": session.updated,
        "doc": _dumps(session.to_doc()),
    }


def _session(doc: str) -> Session:
    return Session.from_doc(orjson.loads(doc))


def _group(doc: str) -> InstanceGroupConstraints:
    return InstanceGroupConstraints(**orjson.loads(doc))


def _instance(doc: str) -> InstanceConstraints:
    return InstanceConstraints(**orjson.loads(doc))


class MaintenanceStore:
    """Sessions and constraints. Every write is one statement (one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sessions ------------------------------------------------------------------------

    async def add(self, session: Session) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(SESSIONS).values(_session_row(session)))

    async def save(self, session: Session) -> None:
        """Rewrite the session whole. One deleted meanwhile stays deleted: an engine step
        that ends after an admin's delete does not bring it back."""
        session.updated = time.time()
        row = _session_row(session)
        stmt = (
            update(SESSIONS)
            .where(SESSIONS.c.session_id == session.session_id)
            .values(state=row["state"], updated=row["updated"], doc=row["doc"])
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)

    async def get(self, session_id: str) -> Session | None:
        query = select(SESSIONS.c.doc).where(SESSIONS.c.session_id == session_id)
        async with self.db.engine.connect() as conn:
            doc = await conn.scalar(query)
        return None if doc is None else _session(doc)

    async def sessions(self, limit: int = 200, active: bool | None = None) -> list[Session]:
        """The newest `limit` sessions; only running ones (`active`), or only ended ones
        (`active=False`)."""
        query = select(SESSIONS.c.doc)
        if active is True:
            query = query.where(SESSIONS.c.state.not_in(_ENDED))
        elif active is False:
            query = query.where(SESSIONS.c.state.in_(_ENDED))
        # The id breaks ties between sessions created in the same instant.
        query = query.order_by(SESSIONS.c.created.desc(), SESSIONS.c.session_id.desc())
        return await self._sessions(query.limit(limit))

    async def active(self) -> list[Session]:
        """Every session not ended, oldest first: the order an engine resumes them in
        after a restart, and what a new session's hosts are checked against."""
        query = (
            select(SESSIONS.c.doc)
            .where(SESSIONS.c.state.not_in(_ENDED))
            .order_by(SESSIONS.c.created, SESSIONS.c.session_id)
        )
        return await self._sessions(query)

    async def _sessions(self, query: Select[str]) -> list[Session]:
        async with self.db.engine.connect() as conn:
            docs = (await conn.scalars(query)).all()
        return [_session(d) for d in docs]

    async def delete(self, session_id: str) -> bool:
        stmt = delete(SESSIONS).where(SESSIONS.c.session_id == session_id)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    # -- instance groups -----------------------------------------------------------------

    async def put_group(self, c: InstanceGroupConstraints) -> None:
        """Store the group's constraints, replacing any it had."""
        row = {
            "group_id": c.group_id,
            "project_id": c.project_id,
            "updated": c.updated,
            "doc": _dumps(dataclasses.asdict(c)),
        }
        await self._upsert(GROUPS, "group_id", row)

    async def get_group(self, group_id: str) -> InstanceGroupConstraints | None:
        query = select(GROUPS.c.doc).where(GROUPS.c.group_id == group_id)
        async with self.db.engine.connect() as conn:
            doc = await conn.scalar(query)
        return None if doc is None else _group(doc)

    async def delete_group(self, group_id: str) -> bool:
        stmt = delete(GROUPS).where(GROUPS.c.group_id == group_id)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def groups(self, project_id: str | None = None) -> list[InstanceGroupConstraints]:
        """All groups' constraints, or one project's, by group id."""
        query = select(GROUPS.c.doc).order_by(GROUPS.c.group_id)
        if project_id is not None:
            query = query.where(GROUPS.c.project_id == project_id)
        async with self.db.engine.connect() as conn:
            docs = (await conn.scalars(query)).all()
        return [_group(d) for d in docs]

    # -- instances -----------------------------------------------------------------------

    async def put_instance(self, c: InstanceConstraints) -> None:
        """Store the instance's constraints, replacing any it had."""
        row = {
            "instance_id": c.instance_id,
            "project_id": c.project_id,
            "group_id": c.group_id,
            "updated": c.updated,
            "doc": _dumps(dataclasses.asdict(c)),
        }
        await self._upsert(INSTANCES, "instance_id", row)

    async def get_instance(self, instance_id: str) -> InstanceConstraints | None:
        query = select(INSTANCES.c.doc).where(INSTANCES.c.instance_id == instance_id)
        async with self.db.engine.connect() as conn:
            doc = await conn.scalar(query)
        return None if doc is None else _instance(doc)

    async def delete_instance(self, instance_id: str) -> bool:
        stmt = delete(INSTANCES).where(INSTANCES.c.instance_id == instance_id)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def instances(self, project_id: str | None = None) -> list[InstanceConstraints]:
        """All instances' constraints, or one project's, by instance id."""
        query = select(INSTANCES.c.doc).order_by(INSTANCES.c.instance_id)
        if project_id is not None:
            query = query.where(INSTANCES.c.project_id == project_id)
        async with self.db.engine.connect() as conn:
            docs = (await conn.scalars(query)).all()
        return [_instance(d) for d in docs]

    async def instances_by_ids(self, ids: Collection[str]) -> dict[str, InstanceConstraints]:
        """The constraints of those of `ids` that have any, by instance id: a session
        reads a whole host's instances at once, not one statement each."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, InstanceConstraints] = {}
        if not wanted:
            return found
        async with self.db.engine.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                query = select(INSTANCES.c.doc).where(INSTANCES.c.instance_id.in_(chunk))
                for doc in (await conn.scalars(query)).all():
                    c = _instance(doc)
                    found[c.instance_id] = c
        return found

    async def _upsert(self, table: Table, key: str, row: dict[str, Any]) -> None:
        stmt = dialect_insert(self.db, table).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={k: v for k, v in row.items() if k != key}
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt)
