"""VM recovery against the real Nova of the test bed: the `openstack` driver's stop,
start, cold and live migration each wait for Nova to finish (Nova answers at once), so
that a restart (stop, then start) and a move work as they do on the lab."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openstack.compute.v2.server import Server as NovaServer
from openstack.connection import Connection

from opendoctor.controller.openstack import OpenStackDriver
from opendoctor.core.faults import Fault
from opendoctor.core.model import PROCESS_EXITED, Server
from opendoctor.core.recovery_settings import VmRecoverySettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.recovery.vm import VmRecovery
from tests.openstack_bed.test_driver import driver_of

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
async def driver(openstack_bed: BedSpec) -> AsyncIterator[OpenStackDriver]:
    d = driver_of(openstack_bed)
    try:
        yield d
    finally:
        await d.close()


async def test_a_server_in_error_is_restarted_then_moved(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    await driver.reset_state(server.id, "error")
    # A stop from error, then a start at once: the stop returned once Nova had it off.
    await driver.stop(server.id)
    assert conn.compute.get_server(server.id).status == "SHUTOFF"
    await driver.start(server.id)
    now = conn.compute.get_server(server.id)
    assert (now.status, now.task_state) == ("ACTIVE", None)

    source = now.compute_host
    moved = await driver.migrate(server.id)
    assert moved.status == "ACTIVE" and moved.host not in (source, "")
    now = conn.compute.get_server(server.id)
    # Confirmed: no resize left waiting for a yes.
    assert (now.compute_host, now.status, now.task_state) == (moved.host, "ACTIVE", None)


async def test_vm_recovery_restarts_a_failed_server_in_nova(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    await driver.reset_state(server.id, "error")
    mine = Server(server.id, server.name, server.compute_host, server.project_id, "ERROR")
    fault = Fault("f1", PROCESS_EXITED, mine.host, 0.0, instance_id=mine.id)
    http = HttpClient()
    try:
        await VmRecovery(driver, http, VmRecoverySettings())(fault, mine)
    finally:
        await http.close()
    [item] = fault.recovery
    assert (item.action, item.result, item.to_host) == ("restart", "ok", mine.host), item.error
    assert conn.compute.get_server(server.id).status == "ACTIVE"


async def test_a_running_server_is_live_migrated(
    driver: OpenStackDriver, server: NovaServer, conn: Connection
) -> None:
    source = server.compute_host
    moved = await driver.live_migrate(server.id)
    assert moved.status == "ACTIVE" and moved.host not in (source, "")
    now = conn.compute.get_server(server.id)
    # Returned once Nova was done, not once it had accepted.
    assert (now.compute_host, now.status, now.task_state) == (moved.host, "ACTIVE", None)
