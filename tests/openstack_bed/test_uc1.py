"""UC1 on real Nova: a lab host and its nova-compute lose power; opendoctor, following
Nova (`vim.driver = "openstack"`), tells every owner within a second of detection, marks
the host down and the servers in error in Nova, and Nova evacuates them elsewhere. The
same story as `opendoctor demo uc1 --vim openstack`, read from its result."""

from __future__ import annotations

from pathlib import Path

import pytest
from openstack.connection import Connection
from rich.console import Console

from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.tools import demo
from tests.openstack_bed.conftest import computes

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(900)]


async def test_uc1_on_real_nova(openstack_bed: BedSpec, conn: Connection, tmp_path: Path) -> None:
    code, result = await demo.run(tmp_path, Console(quiet=True), as_json=True, vim="openstack")
    assert result["problems"] == [] and code == 0
    story = result["fault"]
    host = story["host"]
    assert story["servers"], "the failed host had servers"
    # Every owner heard, each of its own servers, within a second of detection.
    told = {(n["project"], n["instance_id"]) for n in story["notifications"]}
    assert told == {(v["project_id"], v["id"]) for v in story["servers"]}
    assert story["totals"]["detection_to_last_notification"] < demo.LIMIT_NOTIFY
    # Nova was told too: servers in error, host forced down, in that story's order.
    trace = story["trace"]
    assert trace["T00"] < trace["T01"] < trace["T02"] <= trace["T03"]
    assert trace["T01"] < trace["T04"] < trace["T11"]
    # Nova evacuated every server of the failed host to another one, where it runs.
    assert {r["result"] for r in story["recovery"]} == {"ok"}
    assert all(r["to_host"] not in (host, None) for r in story["recovery"])
    where = {r["name"]: f"ACTIVE on {r['to_host']}" for r in story["recovery"]}
    assert story["serving_after"] == where  # and opendoctor's graph has them there
    # Powered on again: opendoctor sees the host up; Nova has it back in service.
    assert result["restore"]["state"]["state"] == "up"
    service = computes(conn)[host]
    assert service.state == "up" and not service.is_forced_down
    # The run's servers and tenants are gone from the shared bed.
    names = {s.name for s in conn.compute.servers(all_projects=True)}
    assert not names & {v["name"] for v in story["servers"]}
    assert not [p for p in conn.identity.projects() if p.name.startswith("uc1-")]
