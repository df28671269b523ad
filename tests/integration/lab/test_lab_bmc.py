"""The lab's BMCs through the real Redfish client (sushy), as fencing will use them: a
host's power read, cut with ForceOff and restored with On; the account is required, and
its password is kept only in the lab's directory (mode 600)."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest
import sushy
from sushy import exceptions as sushy_errors

from opendoctor.lab.manager.redfish import BMC_FILE, ROOT
from opendoctor.lab.runner import LabRunner

IP_PREFIX = "127.223"


def account(lab: LabRunner) -> tuple[str, str]:
    path = lab.state_dir / BMC_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    return data["username"], data["password"]


def client(lab: LabRunner, username: str, password: str) -> sushy.Sushy:
    # Basic auth as a BMC without a session service is used (sushy falls back to it).
    auth = sushy.auth.BasicAuth(username=username, password=password)
    return sushy.Sushy(lab.url + ROOT, auth=auth)


async def test_the_bmc_powers_a_host_off_and_on(lab: LabRunner) -> None:
    user, password = account(lab)
    root = await asyncio.to_thread(client, lab, user, password)
    members = await asyncio.to_thread(lambda: root.get_system_collection().members_identities)
    assert sorted(members) == [f"{ROOT}/Systems/compute{i}" for i in (1, 2, 3)]
    system = await asyncio.to_thread(root.get_system, f"{ROOT}/Systems/compute2")
    assert system.power_state == sushy.POWER_STATE_ON

    await asyncio.to_thread(system.reset_system, sushy.RESET_FORCE_OFF)
    await asyncio.to_thread(system.refresh)
    assert system.power_state == sushy.POWER_STATE_OFF
    hosts = {h["name"]: h for h in await lab.client.host_details()}
    assert hosts["compute2"]["alive"] is False
    faults = [f for f in await lab.client.faults() if f["host"] == "compute2"]
    assert [f["kind"] for f in faults] == ["bmc-power-off"]

    await asyncio.to_thread(system.reset_system, sushy.RESET_ON)
    await asyncio.to_thread(system.refresh)
    assert system.power_state == sushy.POWER_STATE_ON
    hosts = {h["name"]: h for h in await lab.client.host_details()}
    assert hosts["compute2"]["alive"] is True


async def test_the_bmc_wants_its_account(lab: LabRunner) -> None:
    user, password = account(lab)
    root = await asyncio.to_thread(client, lab, user, password + "x")
    with pytest.raises(sushy_errors.AccessError):
        await asyncio.to_thread(root.get_system, f"{ROOT}/Systems/compute1")
    # Nothing was done for the refused caller.
    hosts = {h["name"]: h for h in await lab.client.host_details()}
    assert all(h["alive"] for h in hosts.values())
    assert password not in (lab.state_dir / "lab.json").read_text()
    assert password not in lab.log_path.read_text()
