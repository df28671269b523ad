"""A tenant's alarm action cannot make opendoctor call what only opendoctor reaches."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import alarm_body, owner, running_stack

SPEC = LabSpec(hosts=2, vms=2, projects=["project-a", "project-b"], ip_prefix="127.73")


async def test_an_action_at_the_labs_api_is_refused_and_no_host_fails(tmp_path: Path) -> None:
    """Pointing an alarm at the lab API's `/hosts/compute2/fail` would kill another
    tenant's host the moment the alarm fires: refused when the alarm is created, by
    address or by the name `localhost`, while the consumers' own actions are taken."""
    async with running_stack(SPEC, tmp_path) as s:
        servers = await s.get("/v1/servers")
        vm = servers[0]
        port = urlsplit(s.lab.url).port
        for target in (s.lab.url, f"http://localhost:{port}", "http://169.254.169.254"):
            body = alarm_body(vm, target + "/hosts/compute2/fail")
            resp = await s.http.post(
                s.api + "/v2/alarms", json=body, headers=owner(vm["project_id"])
            )
            assert resp.status == 400, resp.body
            error = resp.json()["error"]
            assert error["errors"][0]["field"] == "alarm_actions[0]"
        assert await s.get("/v2/alarms") == []
        assert len(await s.register_alarms()) == len(servers)  # the consumers' are taken
        assert all(not h.forced_down for h in await s.lab.client.hosts())
