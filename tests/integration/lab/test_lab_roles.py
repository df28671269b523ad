"""VM applications: active/standby roles, the health flag, killing a VM and bringing it back."""

from __future__ import annotations

import os
import signal
import time

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.lab.runner import LabRunner

from .conftest import LabFactory
from .helpers import eventually, pid_running, refused, served_by

IP_PREFIX = "127.217"


async def answer(http: HttpClient, endpoint: str) -> tuple[int, str] | None:
    try:
        resp = await http.get(endpoint, timeout=2.0)
    except HttpError:
        return None
    return resp.status, resp.body.decode()


def host_ctl(lab: LabRunner, name: str) -> HostProc:
    """A handle on a running host's control channel (not a process of our own)."""
    i = int(name.removeprefix("compute"))
    spec = lab.spec
    return HostProc(name, spec.host_address(i), spec.heartbeat_port, spec.control_port, "process")


async def test_roles_and_health_survive_evacuation(
    lab_factory: LabFactory, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=2, vms=2)
    client = lab.client
    vm1, vm2 = await client.server_details()
    assert (vm1["role"], vm1["healthy"]) == ("active", True)
    assert await answer(http, vm1["endpoint"]) == (200, "Served by vm1\n")

    standby = await client.create_server("sb", "project-a", host="compute1", role="standby")
    sb = await client.server_detail(standby.id)
    assert (sb["role"], sb["healthy"], sb["host"]) == ("standby", True, "compute1")
    assert await answer(http, sb["endpoint"]) == (503, "standby: sb\n")

    changed = await client.set_role(vm1["id"], "standby")
    assert (changed["id"], changed["role"]) == (vm1["id"], "standby")
    assert await answer(http, vm1["endpoint"]) == (503, "standby: vm1\n")
    assert (await client.set_role(vm1["id"], "active"))["role"] == "active"
    assert await answer(http, vm1["endpoint"]) == (200, "Served by vm1\n")

    unhealthy = await client.set_health(sb["id"], False)
    assert (unhealthy["healthy"], unhealthy["role"]) == (False, "standby")
    on_host = await host_ctl(lab, "compute1").vm("sb")
    assert on_host is not None and (on_host["healthy"], on_host["role"]) == (False, "standby")
    # The health flag is what the guest reports; it does not change what it serves.
    assert await answer(http, sb["endpoint"]) == (503, "standby: sb\n")

    for path, body in (("role", {"role": "boss"}), ("health", {"healthy": "no"})):
        resp = await http.post(f"{lab.url}/servers/{sb['id']}/{path}", json=body)
        assert resp.status == 400, resp.body
    resp = await http.post(f"{lab.url}/servers", json={"name": "x", "project_id": "p", "role": 1})
    assert resp.status == 400
    await refused(client.set_role("no-such-server", "active"), 404)

    # Power off its host: the evacuated VM keeps its role and health flag.
    await client.fail_host("compute1")
    await client.force_down("compute1", True)
    moved = await client.evacuate(sb["id"])
    assert moved.host == "compute2"
    assert await answer(http, sb["endpoint"]) == (503, "standby: sb\n")
    on_host = await host_ctl(lab, "compute2").vm("sb")
    assert on_host is not None and (on_host["healthy"], on_host["role"]) == (False, "standby")
    assert (await client.server_detail(sb["id"]))["role"] == "standby"

    # A role set while the VM's host is down reaches the VM when it runs again.
    vm1_now = await client.server_detail(vm1["id"])
    assert vm1_now["host"] == "compute1"
    assert (await client.set_role(vm1["id"], "standby"))["role"] == "standby"
    await client.evacuate(vm1["id"])
    assert await answer(http, vm1["endpoint"]) == (503, "standby: vm1\n")

    # And migration keeps them too.
    await client.force_down("compute1", False)
    await client.restore_host("compute1")
    assert (await client.migrate(sb["id"], "compute1")).host == "compute1"
    assert await answer(http, sb["endpoint"]) == (503, "standby: sb\n")
    assert vm2["host"] == "compute2"


async def test_kill_server_records_t00_and_start_brings_it_back(
    lab_factory: LabFactory, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=1, vms=2)
    client = lab.client
    vm1, vm2 = await client.server_details()
    await client.set_role(vm1["id"], "standby")
    before_pid = (await host_ctl(lab, "compute1").vm("vm1") or {})["pid"]

    before = time.time()
    fault = await client.kill_server(vm1["id"])
    assert fault["server_id"] == vm1["id"] and fault["kind"] == "vm-kill"
    assert (fault["host"], fault["server_name"]) == ("compute1", "vm1")
    assert before <= fault["t00"] <= time.time()
    assert await client.faults() == [fault]

    # The VM is gone at once; its host and the other VM are not.
    assert await answer(http, vm1["endpoint"]) is None
    assert not pid_running(before_pid)
    assert await served_by(http, vm2["endpoint"]) == "Served by vm2\n"
    assert (await client.host_details())[0]["alive"] is True
    # The VIM does not know.
    assert (await client.server(vm1["id"])).status == "ACTIVE"
    on_host = await host_ctl(lab, "compute1").vm("vm1")
    assert on_host is not None and on_host["alive"] is False
    assert on_host["exit_reason"] == "process exited with signal SIGKILL"

    await refused(client.kill_server(vm1["id"]), 409)  # already dead
    await refused(client.start(vm2["id"]), 409)  # still running

    # `start` brings a killed VM back (its record never said SHUTOFF), with its role.
    assert (await client.start(vm1["id"])).status == "ACTIVE"
    assert await answer(http, vm1["endpoint"]) == (503, "standby: vm1\n")

    # A VM killed behind the lab's back (no API) is restarted the same way.
    pid = (await host_ctl(lab, "compute1").vm("vm2") or {})["pid"]
    os.kill(pid, signal.SIGKILL)

    async def vm2_dead() -> bool:
        return await answer(http, vm2["endpoint"]) is None

    await eventually(vm2_dead, what="vm2 to stop answering")
    restarted = await client.restart(vm2["id"])
    assert restarted.status == "ACTIVE"
    assert await served_by(http, vm2["endpoint"]) == "Served by vm2\n"

    # `restart` of a running VM replaces its process.
    old = (await host_ctl(lab, "compute1").vm("vm2") or {})["pid"]
    await client.restart(vm2["id"])
    new = (await host_ctl(lab, "compute1").vm("vm2") or {})["pid"]
    assert new != old and not pid_running(old)
    assert await served_by(http, vm2["endpoint"]) == "Served by vm2\n"
    await refused(client.kill_server("nope"), 404)


async def test_inline_vms_have_roles_and_can_be_killed(
    lab_factory: LabFactory, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=1, vms=2, vm_mode="inline")
    client = lab.client
    vm1, vm2 = await client.server_details()
    await client.set_role(vm2["id"], "standby")
    assert await answer(http, vm2["endpoint"]) == (503, "standby: vm2\n")
    fault = await client.kill_server(vm1["id"])
    assert fault["kind"] == "vm-kill"
    assert await answer(http, vm1["endpoint"]) is None
    assert await answer(http, vm2["endpoint"]) == (503, "standby: vm2\n")
    await client.restart(vm1["id"])
    assert await answer(http, vm1["endpoint"]) == (200, "Served by vm1\n")
