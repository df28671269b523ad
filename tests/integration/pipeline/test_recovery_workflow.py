"""Recovery run by a workflow instead of the built-in steps: a failed host is recovered
by the shipped `opendoctor.host_recovery` (fenced through its real BMC, forced down,
its servers evacuated), or by an operator's copy that changes it; each server's record
and the fault's timeline read as they do for the built-in recovery, and the execution
is there to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from opendoctor.lab.runner import LabRunner
from tests.integration.pipeline.conftest import (
    ADMIN,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_fencing import devices, powered
from tests.integration.pipeline.test_host_fault import settled_fault
from tests.integration.pipeline.test_server_fault import EXITED, server_event, server_fault

pytestmark = pytest.mark.slow


async def test_the_shipped_host_workflow_fences_then_evacuates(
    tmp_path: Path, bmcs: LabRunner
) -> None:
    recovery = {"fencing": {"devices": devices(bmcs)}, "host_workflow": "opendoctor.host_recovery"}
    settings = settings_for(tmp_path, recovery=recovery)
    async with serving(settings, lab_vim()) as r:
        on_host = {s.id for s in r.vim.servers.values() if s.host == "compute1"}
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")

        assert not await powered(bmcs, "compute1")
        assert {i.server_id for i in fault.recovery} == on_host
        assert {(i.result, i.method) for i in fault.recovery} == {
            ("ok", "workflow opendoctor.host_recovery")
        }
        assert {s.host for s in r.vim.servers.values() if s.id in on_host} <= {
            "compute2",
            "compute3",
        }
        assert "T11" in fault.trace

        executions = (await r.client.get("/v2/executions", headers=ADMIN)).json()["executions"]
        [execution] = [e for e in executions if e["workflow_name"] == "opendoctor.host_recovery"]
        assert execution["state"] == "SUCCESS"
        tasks = await r.client.get(f"/v2/executions/{execution['id']}/tasks", headers=ADMIN)
        names = {t["name"]: t["state"] for t in tasks.json()["tasks"]}
        assert names == {
            "fence": "SUCCESS",
            "force_down": "SUCCESS",
            "choose": "SUCCESS",
            "evacuate": "SUCCESS",
        }
        # Confirmed off before anything moved.
        store = r.service.workflow_part.store
        stored = {t.name: t for t in await store.tasks(None, 10, execution_id=execution["id"])}
        fenced = stored["fence"].finished_at
        assert fenced is not None and fenced <= (stored["evacuate"].started_at or 0.0)


# An operator's copy: no fencing (say the hosts' power is cut by another system, and
# `recovery.fencing.without_device` says so), and only servers that opted in.
NO_FENCE = """\
version: '2.0'
my_host_recovery:
  input: [host, servers]
  output:
    moved: <% $.moved %>
  tasks:
    evacuate:
      with-items: server in <% $.servers %>
      action: vim.evacuate server_id=<% $.server %> target_host=compute3
      publish:
        moved: <% task().result.select(dict(id => $.id, host => $.host)) %>
"""


async def test_an_operators_copy_replaces_the_steps(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, recovery={"host_workflow": "my_host_recovery"})
    async with serving(settings, lab_vim()) as r:
        resp = await r.client.post(
            "/v2/workflows", content=NO_FENCE, headers={**ADMIN, "content-type": "text/plain"}
        )
        assert resp.status_code == 201, resp.text
        on_host = {s.id for s in r.vim.servers.values() if s.host == "compute1"}
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")
        assert {(i.server_id, i.result, i.to_host) for i in fault.recovery} == {
            (s, "ok", "compute3") for s in on_host
        }
        assert {s.host for s in r.vim.servers.values() if s.id in on_host} == {"compute3"}


async def test_a_host_workflow_that_does_not_exist_fails_each_server_and_moves_none(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, recovery={"host_workflow": "nobody_wrote_this"})
    async with serving(settings, lab_vim()) as r:
        on_host = {s.id for s in r.vim.servers.values() if s.host == "compute1"}
        await r.client.put("/events", json=[host_down("compute1")])
        fault = await settled_fault(r, "compute1")
        assert {i.result for i in fault.recovery} == {"failed"}
        assert all("nobody_wrote_this" in (i.error or "") for i in fault.recovery)
        assert {s.host for s in r.vim.servers.values() if s.id in on_host} == {"compute1"}
        assert "T11" not in fault.trace


async def test_the_shipped_vm_workflow_restarts_a_failed_server(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, recovery={"vm": {"workflow": "opendoctor.vm_recovery"}})
    async with serving(settings, lab_vim()) as r:
        victim = r.vim.servers["00000000-0000-0000-0000-000000000001"]
        await r.client.put("/events", json=[server_event(EXITED, victim.host, victim.id)])
        fault = await server_fault(r, victim.id)
        calls = [c for c in r.vim.calls if c[0] in ("reset_state", "stop", "start")]
        assert calls == [
            ("reset_state", victim.id, "error"),
            ("stop", victim.id),
            ("start", victim.id),
        ]
        [item] = fault.recovery
        assert (item.result, item.method) == ("ok", "workflow opendoctor.vm_recovery")
        assert "T11" in fault.trace
