"""Rule templates added through the API: kept as their YAML text, compiled at start."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.tables import TemplateRow


class TemplateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self) -> dict[str, str]:
        async with self.db.sessions() as session:
            rows = (await session.execute(select(TemplateRow.name, TemplateRow.text))).all()
        return {name: text for name, text in rows}  # noqa: C416 (rows are Row objects)

    async def put(self, name: str, text: str) -> None:
        now = time.time()
        stmt = dialect_insert(self.db, TemplateRow).values(
            name=name, text=text, created=now, updated=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"text": text, "updated": now}
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)

    async def delete(self, name: str) -> bool:
        async with self.db.sessions.begin() as session:
            result = await session.execute(delete(TemplateRow).where(TemplateRow.name == name))
        return bool(getattr(result, "rowcount", 0))
