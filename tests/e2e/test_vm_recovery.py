"""VM recovery with real processes: a killed VM is restarted in place, serves again, and
its owner hears of the failure and then of the recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, alarm_body, owner, running_stack
from tests.conftest import eventually

PROJECT = "project-a"
SPEC = LabSpec(hosts=2, vms=0, projects=[PROJECT], ip_prefix="127.79")


async def subscribe(s: Stack, body: dict[str, Any]) -> None:
    resp = await s.http.post(s.api + "/v2/alarms", json=body, headers=owner(PROJECT))
    assert resp.status == 201, resp.body


def recovery_alarm(server_id: str, url: str) -> dict[str, Any]:
    """The Aodh event alarm an owner registers to hear of its server's recoveries."""
    return {
        "name": "web1-recovery",
        "type": "event",
        "severity": "moderate",
        "repeat_actions": True,
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.recovery",
            "query": [{"field": "traits.instance_id", "op": "eq", "value": server_id}],
        },
    }


async def test_a_killed_vm_is_restarted_in_place_and_serves_again(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        server = await lab.create_server("web1", PROJECT, host="compute1")
        assert server.endpoint is not None

        async def known() -> bool:
            return server.id in {v["id"] for v in await s.get("/v1/servers")}

        await eventually(known, what="the service to learn about web1")
        consumer = s.consumers[PROJECT].ready
        # The owner hears of the failure (as in UC2) and of each recovery outcome.
        await subscribe(s, alarm_body({"id": server.id, "name": "web1"}, consumer + "/failure"))
        await subscribe(s, recovery_alarm(server.id, consumer + "/recovery"))

        t00 = (await lab.kill_server(server.id))["t00"]

        async def recovered() -> list[dict[str, Any]]:
            arrivals = (await s.http.get(consumer + "/arrivals")).json()
            return [a for a in arrivals if a["path"] == "/recovery"]

        [arrival] = await eventually(recovered, timeout=30, what="the recovery callback")
        # The endpoint answers again, from the same host.
        resp = await s.http.get(server.endpoint)
        assert (resp.status, resp.body.decode().strip()) == (200, "Served by web1")
        again = await lab.server(server.id)
        assert (again.status, again.host) == ("ACTIVE", "compute1")

        async def fault() -> dict[str, Any] | None:
            found = [f for f in await s.get("/v1/faults") if f["instance_id"] == server.id]
            return next((f for f in found if f["recovery"] and "T11" in f["trace"]), None)

        record = await eventually(fault, what="the fault's recovery record")
        received = (await s.http.get(consumer + "/received")).json()

    event = arrival["body"]["reason_data"]["event"]
    assert event["event_type"] == "compute.instance.recovery"
    traits = {t[0]: t[2] for t in event["traits"]}
    assert traits["instance_id"] == server.id and traits["project_id"] == PROJECT
    assert (traits["action"], traits["result"], traits["attempt"]) == ("restart", "ok", 1)
    assert traits["host"] == "compute1" and traits["reason"]

    [item] = record["recovery"]
    assert (item["action"], item["result"], item["attempts"]) == ("restart", "ok", 1)
    assert (item["from_host"], item["to_host"]) == ("compute1", "compute1")
    # Detected, the owner told, the server set to error; then it served again (T11).
    trace = record["trace"]
    assert t00 < trace["T01"] < trace["T09"] < trace["T11"]
    assert trace["T03"] < item["started"] <= item["serving"] <= trace["T11"]
    # The owner heard of the failure first, then of the recovery.
    assert [r["path"] for r in received] == ["/failure", "/recovery"]
