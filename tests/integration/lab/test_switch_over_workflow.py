"""The shipped `opendoctor.switch_over` workflow against the real lab: it checks the
standby, makes its application active and moves the load balancer's traffic to it, so
that clients of the pool's address are served by the standby; a standby that is not
running is refused and the load balancer left as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opendoctor.core.egress import EgressPolicy
from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo_uc2 import PROJECT, create_pair
from tests.unit.workflow.bed import Bed, bed_on


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[LabRunner]:
    spec = LabSpec(hosts=2, vms=0, projects=[PROJECT], ip_prefix="127.227")
    async with LabRunner(spec, tmp_path / "lab") as runner:
        yield runner


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    http = HttpClient(egress=EgressPolicy.of(["127.0.0.0/8"]))
    try:
        async with bed_on(f"sqlite+aiosqlite:///{tmp_path}/wf.db", http=http) as bed:
            await bed.workflows.add_builtin()
            yield bed
    finally:
        await http.close()


async def pair(lab: LabRunner) -> dict[str, Any]:
    active, standby, pool = await create_pair(lab.client)
    members = {m["server_id"]: m["id"] for m in await lab.client.lb_members(pool["id"])}
    return {
        "api": lab.url,
        "failed": active.id,
        "standby": standby.id,
        "failed_member": members[active.id],
        "standby_member": members[standby.id],
        "vip": f"http://{pool['vip_address']}:{pool['vip_port']}/",
    }


async def test_the_standby_takes_the_traffic(lab: LabRunner, bed: Bed) -> None:
    given = await pair(lab)
    vip = given.pop("vip")
    assert bed.http is not None
    before = await bed.http.get(vip)
    assert before.body.decode().strip() == "Served by server1"

    done = await bed.run("opendoctor.switch_over", given)
    assert done.state == "SUCCESS", done.state_info
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    assert members == {given["failed"]: False, given["standby"]: True}
    after = await bed.http.get(vip)
    assert (after.status, after.body.decode().strip()) == (200, "Served by server2")
    tasks = await bed.tasks(done.id)
    assert tasks["done"].result == given["standby"]


async def test_a_standby_that_is_not_running_is_refused(lab: LabRunner, bed: Bed) -> None:
    given = await pair(lab)
    given.pop("vip")
    await lab.client.stop(given["standby"])
    done = await bed.run("opendoctor.switch_over", given)
    assert (done.state, done.state_info) == ("ERROR", "no healthy standby")
    members = {m["server_id"]: m["admin_state_up"] for m in await lab.client.lb_members()}
    assert members == {given["failed"]: True, given["standby"]: False}
