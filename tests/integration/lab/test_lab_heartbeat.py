"""Guest heartbeats in the lab: hosts challenge their VMs' agents and report what they miss."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from opendoctor.lab.manager.hostctl import HostProc, socket_root
from opendoctor.lab.procs.guest import MAX_SOCKET_PATH, socket_path

from .conftest import LabFactory
from .helpers import eventually
from .sink import EventSink

IP_PREFIX = "127.221"
MISSED = "compute.instance.heartbeat.missed"
UNHEALTHY = "compute.instance.heartbeat.unhealthy"
DEADLINE = 3.0


def exists(path: str) -> bool:
    return os.path.exists(path)


def control(i: int = 1) -> HostProc:
    return HostProc(f"compute{i}", f"{IP_PREFIX}.1.{i}", 4100, 4101, "process")


def of(sink: EventSink, kind: str, instance_id: str, status: str) -> list[dict[str, object]]:
    return [e for e in sink.of(instance_id, status) if e["type"] == kind]


async def heartbeat_state(name: str) -> object:
    vm = await control().vm(name)
    return vm["heartbeat"] if vm is not None else None


async def test_unhealthy_and_hung_guests_are_reported(
    lab_factory: LabFactory, sink: EventSink
) -> None:
    lab = await lab_factory(hosts=1, vms=2, events_url=sink.url)
    client = lab.client
    vm1, vm2 = await client.servers()
    for name in ("vm1", "vm2"):
        await eventually(lambda n=name: _is(n, "ok"), what=f"{name}'s agent registered")
    info = await control().vm("vm1")
    assert info is not None and info["heartbeat_socket"].endswith("/compute1/vm1.hb.sock")
    path = info["heartbeat_socket"]
    assert stat.S_ISSOCK(os.stat(path).st_mode) and len(path.encode()) <= MAX_SOCKET_PATH

    # The application says it is unhealthy: the guest agent tells the host.
    await client.set_health(vm1.id, False)
    (down,) = await eventually(
        lambda: of(sink, UNHEALTHY, vm1.id, "down"), timeout=DEADLINE, what="unhealthy event"
    )
    details = down["details"]
    assert isinstance(details, dict)
    assert (details["hostname"], details["instance_id"]) == ("compute1", vm1.id)
    assert await heartbeat_state("vm1") == "unhealthy"
    await client.set_health(vm1.id, True)
    await eventually(lambda: of(sink, UNHEALTHY, vm1.id, "up"), timeout=DEADLINE, what="healthy")

    # A hung VM (its process stopped) misses its challenges.
    vm = await control().vm("vm2")
    assert vm is not None
    os.kill(vm["pid"], signal.SIGSTOP)
    try:
        await eventually(
            lambda: of(sink, MISSED, vm2.id, "down"), timeout=DEADLINE, what="missed event"
        )
    finally:
        os.kill(vm["pid"], signal.SIGCONT)
    await eventually(lambda: of(sink, MISSED, vm2.id, "up"), timeout=DEADLINE, what="answers again")

    # A killed VM is reported by its exit; its heartbeat supervision ends quietly.
    await client.kill_server(vm1.id)
    await eventually(lambda: sink.of(vm1.id, "down")[-1:], what="the exit")
    await eventually(lambda: _is("vm1", None), what="supervision of vm1 to end")
    assert not exists(path)
    await client.start(vm1.id)
    await eventually(lambda: _is("vm1", "ok"), what="vm1's agent back")
    # A stopped one is not reported at all.
    await client.stop(vm2.id)
    assert await heartbeat_state("vm2") is None
    assert of(sink, MISSED, vm1.id, "down") == []
    assert len(of(sink, MISSED, vm2.id, "down")) == 1


async def _is(name: str, state: str | None) -> bool:
    return await heartbeat_state(name) == state


async def test_inline_guests_and_switching_heartbeats_off(
    lab_factory: LabFactory, sink: EventSink
) -> None:
    lab = await lab_factory(hosts=1, vms=1, vm_mode="inline", events_url=sink.url)
    (vm,) = await lab.client.servers()
    await eventually(lambda: _is("vm1", "ok"), what="the inline agent registered")
    await lab.client.set_health(vm.id, False)
    await eventually(lambda: of(sink, UNHEALTHY, vm.id, "down"), timeout=DEADLINE, what="event")
    info = await control().vm("vm1")
    assert info is not None
    root = os.path.dirname(os.path.dirname(info["heartbeat_socket"]))
    await lab.stop()
    assert not exists(root)  # the manager cleans up its sockets

    quiet = await lab_factory(hosts=1, vms=1, vm_mode="inline", heartbeat=False)
    vm_info = await control().vm("vm1")
    assert vm_info is not None
    assert (vm_info["heartbeat"], vm_info["heartbeat_socket"]) == (None, None)
    assert quiet.spec.heartbeat is False


def test_socket_paths_stay_short(tmp_path: Path) -> None:
    assert socket_root(Path("/s/lab")) == Path("/s/lab/hosts")
    fallback = socket_root(tmp_path / ("d" * 80))
    try:
        assert str(fallback).startswith("/tmp/od-hb-") and fallback.is_dir()
    finally:
        fallback.rmdir()
    assert socket_path("/s/compute1", "vm1") == "/s/compute1/vm1.hb.sock"
    long = socket_path("/s/compute1", "v" * 200)
    assert long.startswith("/s/compute1/") and len(long) < 60
    assert socket_path("/s/compute1", "a/b") != "/s/compute1/a/b.hb.sock"
