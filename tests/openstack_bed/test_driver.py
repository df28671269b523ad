"""opendoctor's `openstack` VIM driver against the real Nova of the test bed: what the
inspector and recovery call (hosts, servers, force down, reset state, evacuate) and the
change feed the graph follows."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from openstack.compute.v2.server import Server as NovaServer
from openstack.connection import Connection

from opendoctor.controller.openstack import OpenStackDriver
from opendoctor.core.model import VimChange
from opendoctor.core.ports import VimError
from opendoctor.core.settings import OpenStackSettings
from opendoctor.lab.openstack import bed, catalog
from opendoctor.lab.openstack.spec import HOSTS, BedSpec
from tests.conftest import eventually
from tests.openstack_bed.conftest import computes, restart_compute

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


def driver_of(spec: BedSpec, **settings: Any) -> OpenStackDriver:
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(Path(spec.directory) / "clouds.yaml")
    return OpenStackDriver.from_settings(OpenStackSettings(cloud=bed.CLOUD, **settings))


@pytest.fixture
async def driver(openstack_bed: BedSpec) -> AsyncIterator[OpenStackDriver]:
    d = driver_of(openstack_bed, poll_interval=0.5)
    try:
        yield d
    finally:
        await d.close()


@contextlib.asynccontextmanager
async def feed(driver: OpenStackDriver) -> AsyncIterator[list[VimChange]]:
    """What the driver's change feed reports, from its first read of Nova on."""
    seen: list[VimChange] = []

    async def follow() -> None:
        async for change in driver.changes():
            seen.append(change)

    task = asyncio.create_task(follow())
    try:
        # The feed reads Nova once before it watches: what changes after is reported.
        await eventually(lambda: driver.hosts_seen, what="the feed's first read of Nova")
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_driver_reads_nova(
    driver: OpenStackDriver, server: NovaServer, openstack_bed: BedSpec
) -> None:
    hosts = {h.name: h for h in await driver.list_hosts()}
    assert sorted(hosts) == sorted(HOSTS)
    assert all(h.state == "up" and h.enabled and not h.forced_down for h in hosts.values())
    servers = {s.id: s for s in await driver.list_servers()}
    assert servers[server.id].host == server.compute_host
    assert servers[server.id].status == "ACTIVE"
    # Nova reports each compute host at its lab host's address: what the monitor probes.
    state = bed.running(openstack_bed)
    assert state is not None
    assert {h.name: h.address for h in hosts.values()} == state["addresses"]


async def test_the_driver_forces_down_resets_and_evacuates(
    driver: OpenStackDriver, server: NovaServer, conn: Connection, openstack_bed: BedSpec
) -> None:
    source = server.compute_host
    await driver.force_down(source, True)
    assert computes(conn)[source].is_forced_down
    await driver.reset_state(server.id, "error")
    assert conn.compute.get_server(server.id).status == "ERROR"
    # Nova answers at once and rebuilds in the background: evacuate waits for the end.
    moved = await driver.evacuate(server.id)
    assert moved.status == "ACTIVE" and moved.host not in (source, "")
    now = conn.compute.get_server(server.id)
    assert (now.compute_host, now.task_state) == (moved.host, None)
    # The host repaired: its nova-compute starts again and closes the evacuation, and
    # only then does Nova let it be forced up (2024.2 on).
    await asyncio.to_thread(restart_compute, openstack_bed, conn, source)

    async def forced_up() -> bool:
        with contextlib.suppress(VimError):
            await driver.force_down(source, False)
            return True
        return False

    await eventually(forced_up, timeout=120, what=f"Nova to let {source} up")
    assert not computes(conn)[source].is_forced_down


async def test_the_driver_reads_server_groups_and_rebuilds(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    """What HA clusters and server-group messaging need of Nova: its server groups with
    their members, and a server rebuilt in place from its own image."""
    group = conn.compute.create_server_group(name="od-peers", policy="anti-affinity")
    try:
        peer = conn.compute.create_server(
            name="od-peer",
            flavor_id=conn.compute.find_flavor(catalog.FLAVOR, ignore_missing=False).id,
            image_id=conn.image.find_image(catalog.IMAGE, ignore_missing=False).id,
            networks="none",
            scheduler_hints={"group": group.id},
        )
        try:
            conn.compute.wait_for_server(peer, status="ACTIVE", wait=120, interval=0.5)
            found = {g.id: g for g in await driver.server_groups()}
            assert found[group.id].name == "od-peers"
            assert found[group.id].policy == "anti-affinity"
            assert found[group.id].members == (peer.id,)
            assert found[group.id].project_id == group.project_id
        finally:
            conn.compute.delete_server(peer, force=True)
            conn.compute.wait_for_delete(peer, wait=60)
    finally:
        conn.compute.delete_server_group(group)

    rebuilt = await driver.rebuild(server.id)
    assert (rebuilt.id, rebuilt.status, rebuilt.host) == (server.id, "ACTIVE", server.compute_host)
    actions = [a.action for a in conn.compute.server_actions(server.id)]
    assert "rebuild" in actions


async def test_the_change_feed_reports_what_nova_changed(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    async with feed(driver) as seen:
        await asyncio.to_thread(conn.compute.reset_server_state, server, "error")
        await eventually(
            lambda: any(
                c.server is not None and c.server.id == server.id and c.server.status == "ERROR"
                for c in seen
            ),
            timeout=30,
            what="the server's new state in the feed",
        )


async def test_nova_notifications_reach_the_feed_before_any_poll(
    openstack_bed: BedSpec, server: NovaServer, conn: Connection
) -> None:
    """With `notifications_url`, Nova's versioned notifications on the bed's RabbitMQ
    are followed as they come: the poll here waits an hour, so only they can tell."""
    url = f"amqp://{openstack_bed.rabbit}/{quote(openstack_bed.vhost, safe='')}"
    driver = driver_of(openstack_bed, poll_interval=3600, notifications_url=url)
    try:
        async with feed(driver) as seen:
            await asyncio.to_thread(conn.compute.reset_server_state, server, "error")
            errored = await eventually(
                lambda: [c.server for c in seen if c.server and c.server.id == server.id],
                timeout=30,
                what="Nova's notification of the new state",
            )
            assert (errored[-1].status, errored[-1].host) == ("ERROR", server.compute_host)
            host = computes(conn)[server.compute_host]
            await asyncio.to_thread(conn.compute.update_service_forced_down, host, True)
            await eventually(
                lambda: any(
                    c.host is not None and c.host.name == host.host and c.host.forced_down
                    for c in seen
                ),
                timeout=30,
                what="Nova's service.update of the forced-down host",
            )
    finally:
        await driver.close()
