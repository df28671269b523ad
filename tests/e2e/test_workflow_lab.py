"""A rule template starts a workflow on a real fault of the lab: the switch above a host
fails, the template on the host's lost uplink starts `drain_host`, whose tasks migrate
every server off that host (still running: the seeds' "NIC failing" story); the
execution and its tasks are there to look at through the Mistral API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, running_stack, wait_for
from tests.e2e.test_rules_lab import resource_event

SPEC = LabSpec(hosts=3, vms=4, projects=["project-a"], ip_prefix="127.67")

TOPOLOGY = """
entities:
  - {type: switch, id: tor-1, state: up}
relations:
  - {source: "switch:tor-1", target: "host:compute1", label: connects}
"""

DRAIN = """\
version: '2.0'
drain_host:
  description: Move every server off a host that lost its uplink.
  input: [host, servers]
  output:
    moved: <% $.moved %>
  tasks:
    move:
      with-items: id in <% $.servers %>
      concurrency: 4
      action: vim.migrate server_id=<% $.id %>
      publish:
        moved: <% task().result.select($.id) %>
"""

TEMPLATE = """\
name: drain_cut_off_hosts
description: A host cut off from the network is drained (its servers migrate elsewhere).
entities:
  uplink: {category: ALARM, name: host.uplink_down}
  host: {type: host}
scenarios:
  - condition: uplink [on] host
    actions:
      - run_workflow: {workflow: drain_host, target: host}
"""


async def test_a_template_starts_a_workflow_that_migrates_the_servers_off_a_host(
    tmp_path: Path,
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    env = {"OPENDOCTOR_INSPECTOR__TOPOLOGY_FILE": str(topology)}
    async with running_stack(SPEC, tmp_path, env) as s:
        text_headers = {**s.admin, "content-type": "text/plain"}
        resp = await s.http.post(
            s.api + "/v2/workflows", content=DRAIN.encode(), headers=text_headers
        )
        assert resp.status == 201, resp.body
        yaml_headers = {**s.admin, "content-type": "application/yaml"}
        resp = await s.http.post(
            s.api + "/v1/templates", content=TEMPLATE.encode(), headers=yaml_headers
        )
        assert resp.status == 201, resp.body
        on_compute1 = {v["id"] for v in await s.get("/v1/servers") if v["host"] == "compute1"}
        assert on_compute1

        await resource_event(s, "switch", "tor-1", "down")

        execution = await wait_for("the drain to end", lambda: _ended(s), 60)
        assert execution["state"] == "SUCCESS", execution
        tasks = await s.get(f"/v2/executions/{execution['id']}/tasks", s.admin)
        [move] = tasks["tasks"]
        assert (move["name"], move["state"]) == ("move", "SUCCESS")
        actions = await s.get(f"/v2/tasks/{move['id']}/action_executions", s.admin)
        assert len(actions["action_executions"]) == len(on_compute1)
        assert {a["state"] for a in actions["action_executions"]} == {"SUCCESS"}

        servers = {v["id"]: v for v in await s.get("/v1/servers")}
        assert all(servers[i]["host"] != "compute1" for i in on_compute1)
        lab_hosts = {v.id: v.host for v in await s.lab.client.servers()}
        assert all(lab_hosts[i] != "compute1" for i in on_compute1)


async def _ended(s: Stack) -> dict[str, Any] | None:
    found = await s.get("/v2/executions?workflow_name=drain_host", s.admin)
    done = [e for e in found["executions"] if e["state"] in ("SUCCESS", "ERROR")]
    return done[0] if done else None
