"""Fencing through a real BMC: the lab's Redfish service, driven by opendoctor's
Redfish fence device (sushy). A host is fenced only once its BMC says it is off; a
refused account fences nothing and says whose BMC refused, never with the password."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendoctor.core.ports import FenceError
from opendoctor.core.recovery_settings import FenceDeviceSettings, FencingSettings
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.recovery.fencing import Fencing
from opendoctor.tools.stack import fence_devices

pytestmark = pytest.mark.slow


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[LabRunner]:
    async with LabRunner(LabSpec(hosts=2, vms=0, ip_prefix="127.224"), tmp_path / "lab") as lab:
        yield lab


def fencing(lab: LabRunner, password: str | None = None) -> Fencing:
    devices = {
        host: FenceDeviceSettings(**{**device, "password": password or device["password"]})
        for host, device in fence_devices(lab).items()
    }
    return Fencing(FencingSettings(devices=devices))


async def alive(lab: LabRunner) -> dict[str, bool]:
    return {h["name"]: h["alive"] for h in await lab.client.host_details()}


async def test_a_host_is_fenced_when_its_bmc_says_it_is_off(lab: LabRunner) -> None:
    f = fencing(lab)
    try:
        confirmed = await f.fence("compute2")
        assert await alive(lab) == {"compute1": True, "compute2": False}
        fault = next(x for x in await lab.client.faults() if x["host"] == "compute2")
        assert fault["kind"] == "bmc-power-off" and fault["t00"] <= confirmed
        # Fencing a host that is already off confirms at once.
        assert await f.fence("compute2") >= confirmed
        await f.unfence("compute2")
        assert await alive(lab) == {"compute1": True, "compute2": True}
    finally:
        await f.close()


async def test_a_refused_account_fences_nothing(lab: LabRunner) -> None:
    wrong = "not-the-password"
    f = fencing(lab, password=wrong)
    try:
        with pytest.raises(FenceError) as refused:
            await f.fence("compute1")
    finally:
        await f.close()
    assert "compute1" in str(refused.value) and wrong not in str(refused.value)
    assert await alive(lab) == {"compute1": True, "compute2": True}
    with pytest.raises(FenceError, match="no fence device is configured for compute9"):
        await fencing(lab).fence("compute9")
