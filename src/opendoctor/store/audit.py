"""The audit trail in the database: appended by the API, read by admins, pruned by age."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from opendoctor.core.audit import AuditEntry, AuditQuery
from opendoctor.store.db import Database
from opendoctor.store.tables import AuditRow

# Column sizes: a longer value is cut, never refused (the trail must take every entry).
_LIMITS = {"method": 16, "path": 2048, "route": 512, "project_id": 255, "user_id": 255}
_LIMITS |= {"target": 512, "request_id": 64, "peer": 64}


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, entry: AuditEntry) -> None:
        values = {
            "at": entry.at,
            "method": entry.method,
            "path": entry.path,
            "route": entry.route,
            "status": entry.status,
            "project_id": entry.project_id,
            "user_id": entry.user_id,
            "roles": list(entry.roles)[:32],
            "target": entry.target,
            "request_id": entry.request_id,
            "peer": entry.peer,
        }
        for name, most in _LIMITS.items():
            value = values[name]
            if isinstance(value, str) and len(value) > most:
                values[name] = value[:most]
        async with self.db.sessions.begin() as session:
            await session.execute(insert(AuditRow).values(values))

    async def list(self, query: AuditQuery) -> list[AuditEntry]:
        """Newest first."""
        stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(query.limit)
        if query.project_id is not None:
            stmt = stmt.where(AuditRow.project_id == query.project_id)
        if query.user_id is not None:
            stmt = stmt.where(AuditRow.user_id == query.user_id)
        if query.since is not None:
            stmt = stmt.where(AuditRow.at >= query.since)
        if query.marker is not None:
            stmt = stmt.where(AuditRow.id < query.marker)
        async with self.db.sessions() as session:
            rows = await session.scalars(stmt)
            return [
                AuditEntry(
                    id=r.id,
                    at=r.at,
                    method=r.method,
                    path=r.path,
                    route=r.route,
                    status=r.status,
                    project_id=r.project_id,
                    user_id=r.user_id,
                    roles=list(r.roles or []),
                    target=r.target,
                    request_id=r.request_id,
                    peer=r.peer,
                )
                for r in rows
            ]

    async def prune(self, before: float) -> int:
        """Drop entries older than `before`; returns how many went."""
        async with self.db.sessions.begin() as session:
            result = await session.execute(delete(AuditRow).where(AuditRow.at < before))
        return int(getattr(result, "rowcount", 0) or 0)
