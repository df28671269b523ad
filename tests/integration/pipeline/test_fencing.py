"""Fencing in the pipeline: a failed host with a fence device is powered off through its
BMC, and only once the BMC confirms it off are its servers evacuated; a fence that fails
moves none of them, and each server's recovery record says why. The BMCs are the lab's
(real Redfish over HTTP, power of real host processes); the VIM is the in-memory one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from opendoctor.lab.runner import LabRunner
from opendoctor.recovery.guard import FENCING_FAILED
from opendoctor.tools.stack import fence_devices
from tests.integration.pipeline.conftest import (
    ADMIN,
    Consumer,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_host_fault import register_all, settled_fault

pytestmark = pytest.mark.slow


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
        # Every evacuation was asked for after the power-off was confirmed, and after
        # every server was in error (a late mark would undo a move); the fence itself
        # need not wait for those marks.
        assert all(i.started >= fenced for i in fault.recovery)
        assert all(i.started >= fault.trace["T03"] for i in fault.recovery)
        assert "T11" in fault.trace


async def test_a_failed_fence_moves_nothing_raises_the_alarm_and_is_tried_again(
    tmp_path: Path, bmcs: LabRunner, consumer: Consumer
) -> None:
    wrong = devices(bmcs, password="not-the-password")
    # Tried again after 0.2 s, 0.4 s, ... for 1 s; then the servers' recovery is given up.
    fencing = {"devices": wrong, "retry_first": 0.2, "retry_for": 1.0}
    settings = settings_for(tmp_path, recovery={"fencing": fencing})
    async with serving(settings, lab_vim()) as r:
        await register_all(r, consumer)
        # The operator's alarm on failed fences (an event of no project: the admin's).
        resp = await r.client.post(
            "/v2/alarms",
            json={
                "name": "fencing-failed",
                "type": "event",
                "severity": "critical",
                "repeat_actions": True,
                "alarm_actions": [consumer.url + "/fencing"],
                "event_rule": {"event_type": FENCING_FAILED},
            },
            headers=ADMIN,
        )
        assert resp.status_code == 201, resp.text
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
        # Each attempt raised the alarm again, saying why; the password in none.
        told = [a["body"] for a in consumer.arrivals if a["path"] == "/fencing"]
        assert len(told) >= 2
        for body in told:
            traits = _traits(body)
            assert traits["host"] == "compute1" and traits["severity"] == "critical"
            assert traits["reason"].startswith("not evacuated: fencing compute1 failed")
            assert "not-the-password" not in json.dumps(body)
        assert [int(t["attempt"]) for t in (_traits(b) for b in told)] == list(
            range(1, len(told) + 1)
        )


def _traits(body: dict[str, Any]) -> dict[str, Any]:
    return {t[0]: t[2] for t in body["reason_data"]["event"]["traits"]}


async def test_a_device_registered_through_the_api_fences_and_keeps_its_password(
    tmp_path: Path, bmcs: LabRunner, consumer: Consumer
) -> None:
    # No device in the configuration: the operator registers compute1's BMC through the
    # API. The lab's BMCs are on loopback, which the fencing egress policy must allow.
    fencing = {"egress_allow": ["127.0.0.0/8"]}
    settings = settings_for(tmp_path, recovery={"fencing": fencing})
    bmc = devices(bmcs)["compute1"]
    async with serving(settings, lab_vim()) as r:
        resp = await r.client.put("/v1/fence-devices/compute1", json=bmc, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        shown = resp.json()
        assert shown["password"] == "******" and shown["address"] == bmc["address"]
        listed = (await r.client.get("/v1/fence-devices", headers=ADMIN)).json()
        assert [d["host"] for d in listed] == ["compute1"]
        assert bmc["password"] not in json.dumps(listed)
        # At rest, sealed: the database holds no password in the clear.
        stored = await asyncio.to_thread(database_bytes, tmp_path)
        assert bmc["address"].encode() in stored  # the row is in these files...
        assert bmc["password"].encode() not in stored  # ...and its password is not

        await register_all(r, consumer)
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")
        assert "T05" in fault.trace
        assert not await powered(bmcs, "compute1")
        assert {i.result for i in fault.recovery} == {"ok"}


def database_bytes(state_dir: Path) -> bytes:
    """Everything SQLite keeps on disk (the database and its write-ahead log)."""
    return b"".join(f.read_bytes() for f in sorted(state_dir.glob("opendoctor.db*")))
