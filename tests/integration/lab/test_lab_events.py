"""Hosts report VMs whose process exited, and their return, to a real HTTP events sink."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from datetime import datetime
from pathlib import Path

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.lab.statefile import STATE_FILE

from .conftest import LabFactory
from .helpers import eventually, served_by
from .sink import EventSink

IP_PREFIX = "127.218"
DEADLINE = 2.0  # seconds from a VM's death to its event at the sink (really a few ms)


def assert_secret_kept(state_dir: Path, secret: bytes) -> None:
    """The token is on no command line, nor in lab.json, which only its owner reads."""
    state = state_dir / STATE_FILE
    assert secret not in state.read_bytes()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            assert secret not in cmdline.read_bytes(), cmdline


def control(i: int) -> HostProc:
    return HostProc(f"compute{i}", f"{IP_PREFIX}.1.{i}", 4100, 4101, "process")


async def test_lifecycle_events(lab_factory: LabFactory, sink: EventSink, http: HttpClient) -> None:
    lab = await lab_factory(hosts=1, vms=3, events_url=sink.url, events_token="s3cret")
    client = lab.client
    vm1, vm2, vm3 = await client.servers()
    status = await client.events_sink()
    assert (status["url"], status["token_set"]) == (sink.url, True)
    assert status["hosts"]["compute1"]["url"] == sink.url
    assert_secret_kept(lab.state_dir, b"s3cret")

    # Asked to stop: no event. Killed: an event, at once.
    await client.stop(vm3.id)
    fault = await client.kill_server(vm1.id)
    await eventually(lambda: sink.of(vm1.id, "down"), timeout=DEADLINE, what="the down event")
    (request,) = sink.requests
    assert (request.method, request.token) == ("PUT", "s3cret")
    (event,) = request.events
    latency = request.arrived - fault["t00"]
    print(f"\nkill -> lifecycle event at the sink: {latency * 1000:.1f} ms")
    assert latency < DEADLINE
    assert event["type"] == "compute.instance.lifecycle.exited"
    stamp = datetime.fromisoformat(event["time"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event["time"].endswith("Z") and len(event["time"].split(".")[1]) == 7  # microseconds
    assert abs(stamp.timestamp() - fault["t00"]) < DEADLINE
    details = event["details"]
    assert details == {
        "hostname": "compute1",
        "instance_id": vm1.id,
        "instance_name": "vm1",
        "status": "down",
        "monitor": "opendoctor-lab-host",
        "monitor_event_id": details["monitor_event_id"],
        "reason": "process exited with signal SIGKILL",
    }

    # Back again: an `up` event of the same type.
    await client.start(vm1.id)
    await eventually(lambda: sink.of(vm1.id, "up"), timeout=DEADLINE, what="the up event")
    assert await served_by(http, vm1.endpoint or "") == "Served by vm1\n"

    # A VM process that ends on its own (a clean shutdown in the guest, say) is reported too.
    vm = await control(1).vm("vm2")
    assert vm is not None
    os.kill(vm["pid"], signal.SIGTERM)
    down = await eventually(lambda: sink.of(vm2.id, "down"), timeout=DEADLINE, what="vm2 down")
    assert down[0]["details"]["reason"] == "process exited with code 0"
    # A restart after an exit the host reported is reported as `up` even without asking.
    await client.restart(vm2.id)
    await eventually(lambda: sink.of(vm2.id, "up"), timeout=DEADLINE, what="vm2 up")

    assert sink.of(vm3.id) == []  # stopped on request: nothing to report
    ids = [e["details"]["monitor_event_id"] for e in sink.events]
    assert len(ids) == len(set(ids)) == 4


async def test_events_wait_for_a_sink_that_is_down(lab_factory: LabFactory) -> None:
    sink = EventSink()  # its port is chosen, nothing listens on it yet
    lab = await lab_factory(hosts=1, vms=2)
    client = lab.client
    assert (await client.events_sink())["url"] is None
    status = await client.set_events_sink(sink.url)
    assert (status["url"], status["token_set"]) == (sink.url, False)
    vm1, vm2 = await client.servers()

    await client.kill_server(vm1.id)
    await client.kill_server(vm2.id)

    async def retrying() -> bool:
        stats = (await client.events_sink())["hosts"]["compute1"]
        return bool(stats["pending"] == 2 and stats["failures"] >= 2)

    await eventually(retrying, what="the host to retry sending")
    started = time.monotonic()
    await sink.start()
    try:
        await eventually(lambda: len(sink.events) == 2, what="the queued events to arrive")
        print(f"\nsink back -> events delivered in {time.monotonic() - started:.3f} s")
        assert [e["details"]["instance_name"] for e in sink.events] == ["vm1", "vm2"]
        assert sink.requests[0].token is None
        stats = (await client.events_sink())["hosts"]["compute1"]
        assert (stats["pending"], stats["delivered"], stats["last_error"]) == (0, 2, None)

        # A sink that answers non-2xx is retried as well.
        sink.status = 503
        await client.start(vm1.id)
        await eventually(lambda: len(sink.requests) >= 3, what="a refused attempt")
        sink.status = 200

        async def accepted() -> bool:
            stats = (await client.events_sink())["hosts"]["compute1"]
            return bool(stats["pending"] == 0 and stats["delivered"] == 3)

        await eventually(accepted, what="the up event accepted after the refusals")
        attempts = [r for r in sink.requests if r.events[0]["details"]["status"] == "up"]
        assert len(attempts) >= 2 and attempts[0].events == attempts[-1].events
    finally:
        await sink.stop()


async def test_restored_and_inline_hosts_report_too(
    lab_factory: LabFactory, sink: EventSink, http: HttpClient
) -> None:
    lab = await lab_factory(hosts=2, vms=0, vm_mode="inline", events_url=sink.url)
    client = lab.client
    await client.fail_host("compute2")
    await client.restore_host("compute2")
    vm = await client.create_server("late", "project-a", host="compute2")
    assert await served_by(http, vm.endpoint or "") == "Served by late\n"
    await client.kill_server(vm.id)
    (event,) = await eventually(lambda: sink.of(vm.id, "down"), timeout=DEADLINE, what="down")
    assert event["details"]["hostname"] == "compute2"
    assert event["details"]["reason"] == "process exited with signal SIGKILL"
    assert await served_by(http, vm.endpoint or "") is None
    await client.restart(vm.id)
    await eventually(lambda: sink.of(vm.id, "up"), timeout=DEADLINE, what="up")
    assert await served_by(http, vm.endpoint or "") == "Served by late\n"

    # Turning the sink off stops the reports.
    assert (await client.set_events_sink(None))["url"] is None
    await client.kill_server(vm.id)
    assert (await client.events_sink())["hosts"]["compute2"]["dropped"] == 1
    assert len(sink.of(vm.id)) == 2
