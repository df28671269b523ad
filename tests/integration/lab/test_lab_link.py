"""A cut link: a host stops answering heartbeats on its address, and only there."""

from __future__ import annotations

import asyncio
import time

from typer.testing import CliRunner

from opendoctor.controller.lab import LabDriver
from opendoctor.core.model import HOST_UNREACHABLE, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.cli import app
from opendoctor.lab.client import host_from_json
from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.monitor.hostprobe import HostProber

from .conftest import LabFactory
from .helpers import eventually, heartbeat, pid_running, refused, served_by
from .sink import EventSink

IP_PREFIX = "127.222"
PRIMARY, ALT = f"{IP_PREFIX}.1.1", f"{IP_PREFIX}.251.1"


def control() -> HostProc:
    return HostProc("compute1", PRIMARY, 4100, 4101, "process")


async def test_cut_link_silences_the_address_only(
    lab_factory: LabFactory, sink: EventSink, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=2, vms=2, events_url=sink.url)
    client = lab.client
    vm1 = next(s for s in await client.servers() if s.host == "compute1")
    assert vm1.endpoint is not None
    # The VIM's view of the hosts carries the second path.
    driver = LabDriver(lab.url)
    try:
        hosts = {h.name: h for h in await driver.list_hosts()}
    finally:
        await driver.client.close()
    assert (hosts["compute1"].address, hosts["compute1"].alt_address) == (PRIMARY, ALT)
    assert hosts["compute2"].alt_address == f"{IP_PREFIX}.251.2"
    details = (await client.host_details())[0]
    pid = details["pid"]
    assert (details["alt_address"], details["link_cut"]) == (ALT, False)
    assert await heartbeat(PRIMARY, 4100) == await heartbeat(ALT, 4100) == "compute1"
    await eventually(lambda: _guest(vm1.name, "ok"), what="vm1's guest heartbeat")

    before = time.time()
    fault = await client.cut_link("compute1")
    assert (fault["host"], fault["kind"]) == ("compute1", "link-cut")
    assert before <= fault["t00"] <= time.time()
    assert fault in await client.faults()
    await refused(client.cut_link("compute1"), 409)  # cut already

    assert await heartbeat(PRIMARY, 4100) is None
    assert await heartbeat(ALT, 4100) == "compute1"
    # Everything else carries on: the host, its VMs, their guest heartbeats, its events.
    details = (await client.host_details())[0]
    assert (details["alive"], details["pid"], details["link_cut"]) == (True, pid, True)
    assert details["state"] == "up"  # the VIM is not told
    assert pid_running(pid)
    assert await served_by(http, vm1.endpoint) == "Served by vm1\n"
    assert await _guest(vm1.name, "ok")
    assert (await control().vm(vm1.name) or {}).get("alive") is True
    await client.kill_server(vm1.id)
    await eventually(lambda: sink.of(vm1.id, "down"), what="the host's event of vm1's exit")

    host = await client.restore_link("compute1")
    assert (host.name, host.alt_address) == ("compute1", ALT)
    assert await heartbeat(PRIMARY, 4100) == "compute1"
    assert (await client.host_details())[0]["link_cut"] is False
    await refused(client.restore_link("compute1"), 409)  # up already
    await refused(client.cut_link("compute9"), 404)

    # A host that is off has no link to cut; one powered on again comes back linked.
    await client.cut_link("compute2")
    await client.fail_host("compute2")
    await refused(client.cut_link("compute2"), 409)
    assert (await client.host_details())[1]["link_cut"] is False
    await client.restore_host("compute2")
    assert await heartbeat(f"{IP_PREFIX}.1.2", 4100) == "compute2"
    assert (await client.host_details())[1]["link_cut"] is False


async def test_the_host_prober_tells_a_cut_link_from_a_dead_host(
    lab_factory: LabFactory,
) -> None:
    lab = await lab_factory(hosts=2, vms=0)
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    prober = HostProber(MonitorSettings(interval=0.02, misses=3), emit)
    for host in await lab.client.hosts():
        prober.watch(host)
    await prober.start()
    try:
        await eventually(lambda: prober.rounds > 5, what="a few probe rounds")
        await lab.client.cut_link("compute1")
        (event,) = await eventually(lambda: [e for e in events if e.status == "down"])
        assert (event.type, event.hostname) == (HOST_UNREACHABLE, "compute1")
        await lab.client.restore_link("compute1")
        (up,) = await eventually(lambda: [e for e in events if e.status == "up"])
        assert (up.type, up.hostname) == (HOST_UNREACHABLE, "compute1")

        await lab.client.fail_host("compute2")
        down = await eventually(lambda: [e for e in events if e.hostname == "compute2"])
        assert [(e.type, e.status) for e in down] == [("compute.host.down", "down")]
    finally:
        await prober.stop()


async def test_cli_cut_and_restore_link(lab_factory: LabFactory) -> None:
    lab = await lab_factory(hosts=1, vms=0)
    cli = CliRunner()

    def run(*args: str) -> str:
        argv = [*args, "--state-dir", str(lab.state_dir)]
        result = cli.invoke(app, argv, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    # The commands run their own event loop: in a thread of their own here.
    output = await asyncio.to_thread(run, "cut-link", "compute1")
    assert "link of compute1 cut; T00 =" in output
    assert await heartbeat(PRIMARY, 4100) is None
    status = await asyncio.to_thread(run, "status")
    assert f"compute1: link cut (heartbeats answered only at its alt address {ALT})" in status
    output = await asyncio.to_thread(run, "restore-link", "compute1")
    assert "link of compute1 restored" in output
    assert await heartbeat(PRIMARY, 4100) == "compute1"
    assert "link cut" not in await asyncio.to_thread(run, "status")


def test_hosts_from_the_lab_api_with_and_without_an_alt_address() -> None:
    data = {"name": "c1", "address": "10.0.1.1", "heartbeat_port": 4100, "state": "up"}
    data |= {"forced_down": False, "enabled": True}
    assert host_from_json(data) == Host("c1", "10.0.1.1", 4100)  # an older lab
    with_alt = host_from_json({**data, "alt_address": "10.0.251.1"})
    assert with_alt == Host("c1", "10.0.1.1", 4100, alt_address="10.0.251.1")


async def _guest(name: str, state: str) -> bool:
    vm = await control().vm(name)
    return vm is not None and vm["heartbeat"] == state
