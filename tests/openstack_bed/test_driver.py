"""opendoctor's `openstack` VIM driver against the real Nova of the test bed: what the
inspector and recovery call (hosts, servers, force down, reset state, evacuate) and the
change feed the graph follows."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openstack.compute.v2.server import Server as NovaServer
from openstack.connection import Connection

from opendoctor.controller.openstack import OpenStackDriver
from opendoctor.core.model import VimChange
from opendoctor.core.settings import OpenStackSettings
from opendoctor.lab.openstack import bed
from opendoctor.lab.openstack.spec import HOSTS, BedSpec
from tests.conftest import eventually
from tests.openstack_bed.conftest import computes

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
async def driver(openstack_bed: BedSpec) -> AsyncIterator[OpenStackDriver]:
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(Path(openstack_bed.directory) / "clouds.yaml")
    settings = OpenStackSettings(cloud=bed.CLOUD, poll_interval=0.5)
    d = OpenStackDriver.from_settings(settings)
    try:
        yield d
    finally:
        await d.close()


async def test_the_driver_reads_nova(driver: OpenStackDriver, server: NovaServer) -> None:
    hosts = {h.name: h for h in await driver.list_hosts()}
    assert sorted(hosts) == sorted(HOSTS)
    assert all(h.state == "up" and h.enabled and not h.forced_down for h in hosts.values())
    servers = {s.id: s for s in await driver.list_servers()}
    assert servers[server.id].host == server.compute_host
    assert servers[server.id].status == "ACTIVE"


async def test_the_driver_forces_down_resets_and_evacuates(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    source = server.compute_host
    await driver.force_down(source, True)
    assert computes(conn)[source].is_forced_down
    await driver.reset_state(server.id, "error")
    assert conn.compute.get_server(server.id).status == "ERROR"
    await driver.evacuate(server.id)

    async def moved() -> bool:
        now = {s.id: s for s in await driver.list_servers()}[server.id]
        return now.status == "ACTIVE" and now.host != source

    await eventually(moved, timeout=120, what="the server evacuated by Nova")
    await driver.force_down(source, False)
    assert not computes(conn)[source].is_forced_down


async def test_the_change_feed_reports_what_nova_changed(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    seen: list[VimChange] = []

    async def follow() -> None:
        async for change in driver.changes():
            seen.append(change)

    task = asyncio.create_task(follow())
    try:
        # The feed reads Nova once before it watches: what changes after is reported.
        await eventually(lambda: driver.hosts_seen, what="the feed's first read of Nova")
        await asyncio.to_thread(conn.compute.reset_server_state, server, "error")
        await eventually(
            lambda: any(
                c.server is not None and c.server.id == server.id and c.server.status == "ERROR"
                for c in seen
            ),
            timeout=30,
            what="the server's new state in the feed",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
