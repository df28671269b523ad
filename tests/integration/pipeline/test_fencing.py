"""Fencing in the pipeline: a failed host with a fence device is powered off through its
BMC, and only once the BMC confirms it off are its servers evacuated; a fence that fails
moves none of them, and each server's recovery record says why. The BMCs are the lab's
(real Redfish over HTTP, power of real host processes); the VIM is the in-memory one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import fence_devices
from tests.integration.pipeline.conftest import (
    Consumer,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_host_fault import register_all, settled_fault

pytestmark = pytest.mark.slow


@pytest.fixture
async def bmcs(tmp_path: Path) -> AsyncIterator[LabRunner]:
    """Hosts compute1..3, each with its BMC, named as the in-memory VIM's are."""
    async with LabRunner(LabSpec(hosts=3, vms=0, ip_prefix="127.225"), tmp_path / "lab") as lab:
        yield lab


def devices(lab: LabRunner, password: str | None = None) -> dict[str, Any]:
    found = fence_devices(lab)
    return {h: {**d, "password": password or d["password"]} for h, d in found.items()}


async def powered(lab: LabRunner, host: str) -> bool:
    return next(h["alive"] for h in await lab.client.host_details() if h["name"] == host)


async def test_servers_move_only_once_their_host_is_confirmed_off(
    tmp_path: Path, bmcs: LabRunner, consumer: Consumer
) -> None:
    settings = settings_for(tmp_path, recovery={"fencing": {"devices": devices(bmcs)}})
    async with serving(settings, lab_vim()) as r:
        await register_all(r, consumer)
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")
        assert not await powered(bmcs, "compute1")
        assert await powered(bmcs, "compute2") and await powered(bmcs, "compute3")
        fenced = fault.trace["T05"]
        assert fault.trace["T01"] < fenced
        assert fault.recovery and {i.result for i in fault.recovery} == {"ok"}
        # Every evacuation was asked for after the power-off was confirmed.
        assert all(i.started >= fenced for i in fault.recovery)
        assert "T11" in fault.trace


async def test_a_failed_fence_moves_nothing_and_says_why(
    tmp_path: Path, bmcs: LabRunner, consumer: Consumer
) -> None:
    wrong = devices(bmcs, password="not-the-password")
    settings = settings_for(tmp_path, recovery={"fencing": {"devices": wrong}})
    async with serving(settings, lab_vim()) as r:
        await register_all(r, consumer)
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")
        # The owners were told and the host marked down all the same.
        assert "T09" in fault.trace and "T04" in fault.trace
        assert "T05" not in fault.trace and "T11" not in fault.trace
        assert await powered(bmcs, "compute1")
        assert not [c for c in r.vim.calls if c[0] == "evacuate"]
        assert {i.result for i in fault.recovery} == {"failed"}
        for item in fault.recovery:
            assert item.error is not None
            assert item.error.startswith("not evacuated: fencing compute1 failed")
            assert "not-the-password" not in item.error
