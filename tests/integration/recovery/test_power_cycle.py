"""The power-cycle host action through a real BMC: the lab's Redfish service, driven by
opendoctor's Redfish fence device. The host is off for the time asked, runs again
afterwards, and boots into the version an operator staged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.core.recovery_settings import FenceDeviceSettings, FencingSettings
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.power_cycle import MaintainError, PowerCycle
from opendoctor.tools.stack import fence_devices

pytestmark = pytest.mark.slow


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[LabRunner]:
    spec = LabSpec(hosts=2, vms=0, heartbeat=False, ip_prefix="127.229")
    async with LabRunner(spec, tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
async def fencing(lab: LabRunner) -> AsyncIterator[Fencing]:
    # compute1 only: compute2 is the host without a BMC.
    devices = {"compute1": FenceDeviceSettings(**fence_devices(lab)["compute1"])}
    fencing = Fencing(FencingSettings(devices=devices))
    yield fencing
    await fencing.close()


async def test_a_host_is_power_cycled_into_its_staged_version(
    lab: LabRunner, fencing: Fencing
) -> None:
    before = (await lab.client.host("compute1")).version
    await lab.client.stage_version("compute1", "2.0")
    started = time.monotonic()
    await PowerCycle(fencing).maintain("compute1", {"off_seconds": 0.3})
    assert time.monotonic() - started >= 0.3

    hosts = {h["name"]: h for h in await lab.client.host_details()}
    assert hosts["compute1"]["alive"] is True
    assert (before, hosts["compute1"]["version"], hosts["compute1"]["staged_version"]) == (
        "1.0",
        "2.0",
        None,
    )
    assert (await lab.client.host("compute1")).version == "2.0"
    # Its BMC powered it off (not a fault injected); the other host was left alone.
    assert [(f["host"], f["kind"]) for f in await lab.client.faults()] == [
        ("compute1", "bmc-power-off")
    ]
    assert hosts["compute2"]["alive"] is True and hosts["compute2"]["version"] == "1.0"


async def test_a_host_without_a_bmc_is_left_running(lab: LabRunner, fencing: Fencing) -> None:
    with pytest.raises(MaintainError, match="compute2 has no fence device") as refused:
        await PowerCycle(fencing).maintain("compute2", {})
    assert "recovery.fencing.devices" in str(refused.value)
    assert await lab.client.faults() == []
    assert all(h["alive"] for h in await lab.client.host_details())
