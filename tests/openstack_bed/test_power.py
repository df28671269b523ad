"""A lab host's power-off takes its nova-compute with it (when the lab is tied to the
bed, `OPENDOCTOR_LAB_OPENSTACK_DIR`): Nova sees the compute service go down, as in a real
cloud, and up again when the host is powered on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from openstack.connection import Connection

from opendoctor.infra.procs import pid_alive
from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.lab.openstack.state import TIE_ENV, read_state
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from tests.conftest import eventually

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


def compute_pid(spec: BedSpec, host: str) -> int:
    state = read_state(spec)
    assert state is not None
    return next(int(p["pid"]) for p in state["processes"] if p["host"] == host)


async def state_of(conn: Connection, host: str, want: str, timeout: float) -> float:
    """Seconds until Nova reports the host's compute service `want`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        services = await asyncio.to_thread(list, conn.compute.services(binary="nova-compute"))
        if next(s.state for s in services if s.host == host) == want:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"{host} not {want} in Nova after {timeout}s")


async def test_power_off_of_a_lab_host_kills_its_nova_compute(
    conn: Connection, openstack_bed: BedSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIE_ENV, str(openstack_bed.directory))
    before = compute_pid(openstack_bed, "compute2")
    async with LabRunner(LabSpec(ip_prefix="127.231"), tmp_path / "lab") as lab:
        await lab.client.fail_host("compute2")
        await eventually(lambda: not pid_alive(before), 10, "nova-compute of compute2 gone")
        # Nova hears nothing more and says so after service_down_time (20 s here).
        await state_of(conn, "compute2", "down", 60)

        await lab.client.restore_host("compute2")
        after = compute_pid(openstack_bed, "compute2")
        assert after != before and pid_alive(after)
        await state_of(conn, "compute2", "up", 60)
