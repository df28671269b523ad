"""Fencing over IPMI: the lab's IPMI BMCs (pyghmi's server, RMCP+), driven by
opendoctor's IPMI fence device (pyghmi's client). Power off kills the host's processes
and reads back off; power on brings the host back; a refused account fences nothing and
never shows the password; `Fencing` confirms a fence through an IPMI device."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from opendoctor.core.ports import FenceError
from opendoctor.core.recovery_settings import FenceDeviceSettings, FencingSettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.procs import pid_alive
from opendoctor.lab.manager.redfish import BMC_FILE
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.lab.statefile import read_state
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.ipmi import IpmiDevice
from opendoctor.recovery.redfish import RedfishDevice
from opendoctor.tools.stack import fence_devices
from tests.conftest import eventually
from tests.integration.lab.helpers import processes_matching

pytestmark = pytest.mark.slow
IP_PREFIX = "127.226"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[LabRunner]:
    spec = LabSpec(hosts=2, vms=2, ip_prefix=IP_PREFIX)
    async with LabRunner(spec, tmp_path / "lab") as lab:
        yield lab


def ipmi_settings(lab: LabRunner, host: str, **change: Any) -> FenceDeviceSettings:
    """The IPMI BMC of `host`, as lab.json reports it, with the lab's BMC account."""
    state = read_state(lab.state_dir)
    assert state is not None
    account = json.loads((lab.state_dir / BMC_FILE).read_text())
    device = {
        "driver": "ipmi",
        "address": state["ipmi"][host],
        "username": account["username"],
        "password": account["password"],
    }
    return FenceDeviceSettings(**{**device, **change})


async def hosts(lab: LabRunner) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in await lab.client.host_details()}


async def test_the_bmcs_are_reported_in_the_state_and_the_api(lab: LabRunner) -> None:
    state = read_state(lab.state_dir)
    assert state is not None and sorted(state["ipmi"]) == ["compute1", "compute2"]
    assert all(a.startswith("127.0.0.1:") for a in state["ipmi"].values())
    assert len(set(state["ipmi"].values())) == 2  # a port of its own per host
    http = HttpClient(timeout=5.0)
    try:
        answer = await http.get(lab.url + "/ipmi")
    finally:
        await http.close()
    assert answer.status == 200 and json.loads(answer.body) == state["ipmi"]


async def test_ipmi_powers_a_host_off_and_on(lab: LabRunner) -> None:
    device = IpmiDevice("compute2", ipmi_settings(lab, "compute2"))
    try:
        assert await device.power_state() == "on"
        before = await hosts(lab)
        pid = before["compute2"]["pid"]
        vm = next(s for s in await lab.client.servers() if s.host == "compute2")
        vm_address = f" {urlsplit(vm.endpoint or '').hostname} "
        assert processes_matching(vm_address)  # the VM's process runs

        await device.power_off()
        assert await device.power_state() == "off"
        after = await hosts(lab)
        assert after["compute2"]["alive"] is False and after["compute1"]["alive"] is True
        # The host's process group is gone: the host and the VM it ran.
        assert not pid_alive(pid)
        assert processes_matching(vm_address) == []
        faults = [f for f in await lab.client.faults() if f["host"] == "compute2"]
        assert [f["kind"] for f in faults] == ["bmc-power-off"]
        # Off again is no error, as with a real BMC.
        await device.power_off()

        await device.power_on()
        # A BMC accepts power-on at once and the host boots after: poll its state.
        await eventually(device_says(device, "on"), what="compute2 powered on")
        restored = await hosts(lab)
        assert restored["compute2"]["alive"] is True and restored["compute2"]["pid"] != pid
    finally:
        await device.close()


def device_says(device: IpmiDevice, state: str) -> Any:
    async def check() -> bool:
        return await device.power_state() == state

    return check


@pytest.mark.parametrize("wrong", ["password", "username"])
async def test_a_refused_account_powers_nothing(lab: LabRunner, wrong: str) -> None:
    secret = ipmi_settings(lab, "compute1").password.get_secret_value()
    change = {"password": "not-the-password"} if wrong == "password" else {"username": "nobody"}
    device = IpmiDevice("compute1", ipmi_settings(lab, "compute1", **change))
    try:
        with pytest.raises(FenceError) as refused:
            await device.power_off()
    finally:
        await device.close()
    message = str(refused.value)
    assert "compute1" in message
    assert "not-the-password" not in message and secret not in message
    assert all(h["alive"] for h in (await hosts(lab)).values())
    assert secret not in (lab.state_dir / "lab.json").read_text()
    assert secret not in lab.log_path.read_text()


async def test_fencing_confirms_a_fence_through_ipmi(lab: LabRunner) -> None:
    # Each host's device by its driver: compute1's BMC over IPMI, compute2's over Redfish.
    redfish = FenceDeviceSettings(**fence_devices(lab)["compute2"])
    devices = {"compute1": ipmi_settings(lab, "compute1"), "compute2": redfish}
    fencing = Fencing(FencingSettings(devices=devices))
    assert isinstance(fencing.devices["compute1"], IpmiDevice)
    assert isinstance(fencing.devices["compute2"], RedfishDevice)
    try:
        confirmed = await fencing.fence("compute1")
        assert {n: h["alive"] for n, h in (await hosts(lab)).items()} == {
            "compute1": False,
            "compute2": True,
        }
        fault = next(f for f in await lab.client.faults() if f["host"] == "compute1")
        assert fault["kind"] == "bmc-power-off" and fault["t00"] <= confirmed
        # A host already off is confirmed at once.
        assert await fencing.fence("compute1") >= confirmed
        await fencing.unfence("compute1")
        device = fencing.devices["compute1"]
        assert isinstance(device, IpmiDevice)
        await eventually(device_says(device, "on"), what="compute1 powered on")
    finally:
        await fencing.close()
