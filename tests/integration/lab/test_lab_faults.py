"""Fault injection: power off a host, evacuate its servers, power it on again."""

from __future__ import annotations

import time

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.runner import LabRunner

from .helpers import eventually, heartbeat, processes_matching, refused, served_by

IP_PREFIX = "127.212"


async def test_fail_host_kills_host_and_its_vms(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    victims = [s for s in await client.servers() if s.host == "compute1"]
    others = [s for s in await client.servers() if s.host != "compute1"]
    host = (await client.host_details())[0]
    assert victims and host["name"] == "compute1"

    before = time.time()
    fault = await client.fail_host("compute1")
    assert fault["host"] == "compute1" and fault["kind"] == "power-off"
    assert before <= fault["t00"] <= time.time()
    assert await client.faults() == [fault]

    # The lab's truth changed at once ...
    assert await heartbeat(host["address"], host["heartbeat_port"]) is None
    for vm in victims:
        assert vm.endpoint is not None
        assert await served_by(http, vm.endpoint) is None
    assert processes_matching(f"--address {host['address']} ") == []
    for vm in victims:
        address = vm.endpoint.split("//")[1].split(":")[0] if vm.endpoint else ""
        assert processes_matching(f"--address {address} ") == []
    details = (await client.host_details())[0]
    assert (details["alive"], details["pid"]) == (False, None)
    # ... but the VIM does not know yet.
    assert (details["state"], details["forced_down"]) == ("up", False)
    assert all(s.status == "ACTIVE" for s in await client.servers())

    for vm in others:
        assert vm.endpoint is not None
        assert await served_by(http, vm.endpoint) == f"Served by {vm.name}\n"

    await refused(client.fail_host("compute1"), 409)  # already off


async def test_evacuate_after_force_down(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    vm = next(s for s in await client.servers() if s.host == "compute2")
    assert vm.endpoint is not None

    await refused(client.evacuate(vm.id), 409)  # its host is healthy

    await client.fail_host("compute2")
    assert await served_by(http, vm.endpoint) is None
    await client.force_down("compute2", True)
    await client.reset_state(vm.id, "error")

    moved = await client.evacuate(vm.id)
    assert moved.host in ("compute1", "compute3")
    assert (moved.status, moved.endpoint) == ("ACTIVE", vm.endpoint)
    assert await served_by(http, vm.endpoint) == f"Served by {vm.name}\n"

    # An explicit target is honoured; a dead or forced-down one is refused.
    second = next(s for s in await client.servers() if s.host == "compute2")
    await refused(client.evacuate(second.id, "compute2"), 409)
    await refused(client.evacuate(second.id, "compute9"), 404)
    assert (await client.evacuate(second.id, "compute3")).host == "compute3"


async def test_evacuate_off_a_dead_host_the_vim_still_believes_up(lab: LabRunner) -> None:
    # Nova refuses only while the compute service is up; a dead host is not.
    client = lab.client
    vm = next(s for s in await client.servers() if s.host == "compute3")
    await client.fail_host("compute3")
    assert (await client.evacuate(vm.id)).host in ("compute1", "compute2")


async def test_restore_host_comes_back_empty(lab: LabRunner, http: HttpClient) -> None:
    client = lab.client
    victims = [s for s in await client.servers() if s.host == "compute1"]
    await client.fail_host("compute1")
    await refused(client.restore_host("compute2"), 409)  # it never went down

    host = await client.restore_host("compute1")
    assert host.name == "compute1"
    assert await heartbeat(host.address, host.heartbeat_port) == "compute1"
    details = (await client.host_details())[0]
    assert details["alive"] is True and isinstance(details["pid"], int)
    # Empty: the VMs it ran before the power loss stay down.
    for vm in victims:
        assert vm.endpoint is not None
        assert await served_by(http, vm.endpoint) is None

    # Stop then start brings a server of the restored host back, as with Nova.
    vm = victims[0]
    assert vm.endpoint is not None
    await client.reset_state(vm.id, "error")
    assert (await client.stop(vm.id)).status == "SHUTOFF"
    assert (await client.start(vm.id)).status == "ACTIVE"
    await eventually(
        lambda: _serves(http, vm.endpoint or "", vm.name), what=f"{vm.name} serving again"
    )


async def _serves(http: HttpClient, endpoint: str, name: str) -> bool:
    return await served_by(http, endpoint) == f"Served by {name}\n"
