"""The stored topology keeps every field of a host, its second heartbeat path included."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import update

from opendoctor.core.model import Host, Server
from opendoctor.store.db import Database
from opendoctor.store.pipeline import RESOURCE_ROWS, ResourceStore
from opendoctor.store.tables import ResourceRow
from tests.sql_trace import starting, statements


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


async def test_a_group_of_changes_is_a_few_statements_and_replaces_what_was_stored(
    db_url: str,
) -> None:
    db = Database(db_url)
    await db.migrate()
    try:
        store = ResourceStore(db)
        servers = [
            Server(f"s{i}", f"vm{i}", "compute1", "project-a", metadata={"HA_Enabled": "True"})
            for i in range(1500)
        ]
        await store.upsert([Host("compute1", "10.0.1.1", 4100)], servers)
        # A host's fault: every server marked in error, the host down; one server twice
        # (the feed's later change wins).
        errored = [replace(s, status="ERROR") for s in servers]
        again = replace(errored[7], status="SHUTOFF")
        down = Host("compute1", "10.0.1.1", 4100, state="down", forced_down=True)
        with statements(db) as seen:
            await store.upsert([down], [*errored, again])
        # 1,502 rows given: a statement per RESOURCE_ROWS, not one per row.
        assert len(starting(seen, "INSERT")) == -(-1502 // RESOURCE_ROWS)
        loaded, stored = await store.load()
        assert loaded == [down]
        by_id = {s.id: s for s in stored}
        assert len(by_id) == 1500
        assert by_id["s7"] == again
        assert by_id["s8"] == errored[8]
        assert by_id["s8"].metadata == {"HA_Enabled": "True"}
    finally:
        await db.close()
