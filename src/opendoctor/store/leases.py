"""Leases in the database: how one replica of a singleton role is chosen.

A lease is held by one holder until it expires; the holder renews it well before. Time
is the database's clock (epoch seconds), so that replicas on machines whose clocks
disagree still agree on who leads. Taking a lease is one atomic statement: insert, or
take over if it is ours or has expired.

`LeasePresence` is the `core.ports.Presence` of the scaled-out bus on these leases:
several claims taken, renewed or read in one statement.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, literal_column, select

from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.tables import LeaseRow


def _now(db: Database) -> Any:
    if db.engine.dialect.name == "postgresql":
        return literal_column("extract(epoch from clock_timestamp())::float8")
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)")


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease for `ttl` seconds; False if another holds it."""
        now = _now(self.db)
        stmt = dialect_insert(self.db, LeaseRow).values(name=name, holder=holder, expires=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": holder, "expires": now + ttl},
            where=(LeaseRow.holder == holder) | (LeaseRow.expires < now),
        ).returning(LeaseRow.holder)
        async with self.db.sessions.begin() as session:
            won = (await session.execute(stmt)).scalar_one_or_none()
        return won == holder

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean stop), so another takes over without waiting."""
        async with self.db.sessions.begin() as session:
            await session.execute(
                delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder)
            )

    async def acquire_many(self, names: Collection[str], holder: str, ttl: float) -> set[str]:
        """`acquire` for several leases in one statement; returns those won."""
        if not names:
            return set()
        now = _now(self.db)
        rows = [{"name": n, "holder": holder, "expires": now + ttl} for n in sorted(names)]
        stmt = dialect_insert(self.db, LeaseRow).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": holder, "expires": now + ttl},
            where=(LeaseRow.holder == holder) | (LeaseRow.expires < now),
        ).returning(LeaseRow.name, LeaseRow.holder)
        async with self.db.sessions.begin() as session:
            won = (await session.execute(stmt)).all()
        return {name for name, who in won if who == holder}

    async def release_many(self, names: Collection[str], holder: str) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(
                delete(LeaseRow).where(LeaseRow.name.in_(list(names)), LeaseRow.holder == holder)
            )

    async def holders(self, names: Collection[str]) -> dict[str, str]:
        """Who holds each of these leases now (leases nobody holds are left out)."""
        if not names:
            return {}
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(LeaseRow.name, LeaseRow.holder).where(
                    LeaseRow.name.in_(list(names)), LeaseRow.expires >= _now(self.db)
                )
            )
            return {str(name): str(holder) for name, holder in rows.all()}

    async def holder(self, name: str) -> str | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        async with self.db.sessions() as session:
            holder: str | None = (
                await session.execute(
                    select(LeaseRow.holder).where(
                        LeaseRow.name == name, LeaseRow.expires >= _now(self.db)
                    )
                )
            ).scalar_one_or_none()
        return holder


class LeasePresence:
    """`Presence` on leases: a claim is a lease, its holder the claiming process."""

    def __init__(self, leases: LeaseStore) -> None:
        self.leases = leases

    async def claim(self, names: Collection[str], holder: str, ttl: float) -> set[str]:
        return await self.leases.acquire_many(names, holder, ttl)

    async def release(self, names: Collection[str], holder: str) -> None:
        await self.leases.release_many(names, holder)

    async def holders(self, names: Collection[str]) -> dict[str, str]:
        return await self.leases.holders(names)
