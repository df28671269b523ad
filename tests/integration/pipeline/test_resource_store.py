"""The stored topology keeps every field of a host, its second heartbeat path included."""

from __future__ import annotations

from sqlalchemy import update

from opendoctor.core.model import Host, Server
from opendoctor.store.db import Database
from opendoctor.store.pipeline import ResourceStore
from opendoctor.store.tables import ResourceRow


async def test_hosts_round_trip_with_and_without_an_alt_address(db_url: str) -> None:
    db = Database(db_url)
    await db.migrate()
    try:
        store = ResourceStore(db)
        hosts = [
            Host("compute1", "10.0.1.1", 4100, alt_address="10.0.251.1"),
            Host("compute2", "10.0.1.2", 4100, state="down", forced_down=True),
        ]
        server = Server("s1", "vm1", "compute1", "project-a")
        await store.upsert(hosts, [server])
        loaded, servers = await store.load()
        assert sorted(loaded, key=lambda h: h.name) == hosts
        assert servers == [server]

        # A row stored before hosts had an alt address still loads.
        await store.upsert([Host("compute3", "10.0.1.3", 4100)], [])
        old = {"name": "compute3", "address": "10.0.1.3", "heartbeat_port": 4100}
        async with db.sessions.begin() as session:
            await session.execute(
                update(ResourceRow).where(ResourceRow.id == "host:compute3").values(data=old)
            )
        loaded, _ = await store.load()
        assert next(h for h in loaded if h.name == "compute3").alt_address is None
    finally:
        await db.close()
