"""Planned maintenance on real Nova: a session over the host of a server disables its
compute service, moves the server as its constraints say (live) through the `openstack`
driver, returns the host, and enables the service again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openstack.compute.v2.server import Server as NovaServer
from openstack.connection import Connection

from opendoctor.controller.openstack import OpenStackDriver
from opendoctor.core.maintenance import LIVE_MIGRATE, MAINTENANCE_DONE, InstanceConstraints
from opendoctor.inspector.topology import Topology
from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.maintenance.engine import Engine
from opendoctor.maintenance.host_actions import NothingToDo
from opendoctor.maintenance.reach import Reach
from opendoctor.maintenance.service import Maintenance
from opendoctor.store.db import Database
from opendoctor.store.maintenance import MaintenanceStore
from tests.conftest import eventually
from tests.openstack_bed.conftest import computes
from tests.openstack_bed.test_driver import driver_of
from tests.unit.maintenance.bed import Notices, settings

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
async def driver(openstack_bed: BedSpec) -> AsyncIterator[OpenStackDriver]:
    d = driver_of(openstack_bed, poll_interval=0.5)
    try:
        yield d
    finally:
        await d.close()


async def test_a_session_moves_a_server_off_its_host_in_nova(
    driver: OpenStackDriver, server: NovaServer, conn: Connection, tmp_path: Path
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'od.db'}")
    await db.migrate()
    topology = Topology()
    topology.load(await driver.list_hosts(), await driver.list_servers())

    async def follow() -> None:
        async for change in driver.changes():
            topology.apply(change)

    following = asyncio.create_task(follow())
    store = MaintenanceStore(db)
    config = settings(reply_timeout=0.5, move_timeout=300)
    reach = Reach(
        store=store,
        settings=config,
        vim=lambda: driver,
        hosts=lambda: topology.hosts,
        servers_on=topology.servers_on,
        notify=Notices(),
        maintainers={"dummy": NothingToDo()},
        mark=lambda host, on: None,
        faulted_hosts=set,
        base_url="http://127.0.0.1:8780",
    )
    engine = Engine(reach, None, "test")
    service = Maintenance(store, config, lambda: topology.hosts, lambda: topology.servers, engine)
    await engine.start()
    source = server.compute_host
    try:
        # Its owner never answers: its constraints say how it moves.
        await service.put_instance(
            InstanceConstraints(server.id, server.project_id, migration_type=LIVE_MIGRATE)
        )
        session = await service.create([source], None)

        async def ended() -> bool:
            return (await service.get(session.session_id)).done

        await eventually(ended, 300, "the session to end")
        done = await service.get(session.session_id)
    finally:
        await engine.stop()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await db.close()
    assert done.state == MAINTENANCE_DONE, done.error
    [moved] = done.instances.values()
    assert (moved.action, moved.state) == (LIVE_MIGRATE, "done")
    now = conn.compute.get_server(server.id)
    assert (now.status, now.task_state) == ("ACTIVE", None)
    assert now.compute_host not in (source, None) and now.compute_host == moved.to_host
    # The host is back in service in Nova.
    assert computes(conn)[source].status == "enabled"
