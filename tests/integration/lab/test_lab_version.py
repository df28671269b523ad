"""A lab host's version: what it runs, and what an operator staged for its next boot.

A host powered on again (the lab's restore, or its BMC's `On`) runs the staged version
and the stage is gone; the VIM's view (host details, the change feed) says so."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.client import LabClient
from opendoctor.lab.manager.redfish import BMC_FILE, ROOT
from opendoctor.lab.runner import LabRunner

from .conftest import LabFactory
from .helpers import refused

IP_PREFIX = "127.228"


@pytest.fixture
async def slow_http() -> AsyncIterator[HttpClient]:
    """A client with room for a BMC's `On`: it answers once the host has started."""
    client = HttpClient(timeout=30.0)
    yield client
    await client.close()


async def details(client: LabClient, name: str) -> dict[str, Any]:
    return next(h for h in await client.host_details() if h["name"] == name)


async def test_a_restored_host_runs_its_staged_version(lab_factory: LabFactory) -> None:
    lab: LabRunner = await lab_factory(hosts=2, vms=0, heartbeat=False, host_version="2023.1")
    client = lab.client
    assert {h.name: h.version for h in await client.hosts()} == {
        "compute1": "2023.1",
        "compute2": "2023.1",
    }

    staged = await client.stage_version("compute2", "2024.1 (staged)")
    assert (staged["version"], staged["staged_version"]) == ("2023.1", "2024.1 (staged)")
    # Staging changes nothing until the host boots: it keeps running the old version.
    assert (await details(client, "compute2"))["version"] == "2023.1"

    seq = int((await client.health())["seq"])
    await client.fail_host("compute2")
    assert (await details(client, "compute2"))["staged_version"] == "2024.1 (staged)"
    host = await client.restore_host("compute2")
    assert host.version == "2024.1 (staged)"
    now = await details(client, "compute2")
    assert (now["alive"], now["version"], now["staged_version"]) == (True, "2024.1 (staged)", None)
    assert (await details(client, "compute1"))["version"] == "2023.1"
    # The VIM learns of the new version through its change feed, as of a hypervisor.
    _, changes = await client.changes(seq)
    versions = [c.host.version for c in changes if c.host is not None and c.host.name == "compute2"]
    assert versions == ["2024.1 (staged)"]

    # Without a stage a power cycle keeps the version.
    await client.fail_host("compute2")
    assert (await client.restore_host("compute2")).version == "2024.1 (staged)"


async def test_the_bmc_powers_a_host_on_into_its_staged_version(
    lab_factory: LabFactory, slow_http: HttpClient
) -> None:
    lab = await lab_factory(hosts=2, vms=0, heartbeat=False)
    assert (await lab.client.host("compute1")).version == "1.0"
    await lab.client.stage_version("compute1", "1.1")
    account = json.loads((lab.state_dir / BMC_FILE).read_text())
    token = base64.b64encode(f"{account['username']}:{account['password']}".encode()).decode()
    auth = {"Authorization": f"Basic {token}"}
    reset = f"{lab.url}{ROOT}/Systems/compute1/Actions/ComputerSystem.Reset"

    off = await slow_http.post(reset, json={"ResetType": "ForceOff"}, headers=auth)
    assert off.status == 204
    assert (await details(lab.client, "compute1"))["alive"] is False
    on = await slow_http.post(reset, json={"ResetType": "On"}, headers=auth)
    assert on.status == 204
    host = await details(lab.client, "compute1")
    assert (host["alive"], host["version"], host["staged_version"]) == (True, "1.1", None)


BAD_BODIES: list[dict[str, Any]] = [
    {},
    {"version": ""},
    {"version": "x" * 65},
    {"version": "1.0\n"},
    {"version": 2},
    {"version": None},
]


async def test_a_bad_stage_is_refused(lab_factory: LabFactory, http: HttpClient) -> None:
    lab = await lab_factory(hosts=1, vms=0, heartbeat=False)
    url = f"{lab.url}/hosts/compute1/staged-version"
    for body in BAD_BODIES:
        answer = await http.put(url, json=body)
        assert answer.status == 400, body
        assert "'version'" in answer.json()["error"]["message"], body
    # 64 printable characters, spaces included, are a version.
    assert (await http.put(url, json={"version": "v" + " x" * 31 + "!"})).status == 200
    error = await refused(lab.client.stage_version("compute9", "2.0"), 404)
    assert "compute9" in str(error)
    assert (await details(lab.client, "compute1"))["staged_version"] == "v" + " x" * 31 + "!"
