"""VM recovery through the embedded pipeline: a failed server is restarted once its
owner is told and the VIM has it in error, and the owner hears how that went."""

from __future__ import annotations

import time
from typing import Any

from opendoctor.core.model import iso
from tests.conftest import eventually
from tests.integration.pipeline.conftest import ADMIN, Consumer, Running, as_project
from tests.integration.pipeline.test_server_fault import EXITED, server_event, server_fault

UNREACHABLE = "compute.host.unreachable"


def recovery_alarm(server_id: str, url: str) -> dict[str, Any]:
    """What an owner registers to hear of its server's recoveries (every one of them)."""
    return {
        "name": f"recovery-{server_id[-4:]}",
        "type": "event",
        "repeat_actions": True,
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.recovery",
            "query": [{"field": "traits.instance_id", "op": "eq", "value": server_id}],
        },
    }


async def test_a_failed_server_is_restarted_and_its_owner_told(
    running: Running, consumer: Consumer
) -> None:
    victim = running.vim.servers["00000000-0000-0000-0000-000000000001"]
    resp = await running.client.post(
        "/v2/alarms",
        json=recovery_alarm(victim.id, consumer.url + "/recovery"),
        headers=as_project(victim.project_id),
    )
    assert resp.status_code == 201

    await running.client.put("/events", json=[server_event(EXITED, victim.host, victim.id)])
    fault = await server_fault(running, victim.id)  # its work done: recovery included

    # Set to error by the rules first, then power-cycled in place.
    calls = [c for c in running.vim.calls if c[0] in ("reset_state", "stop", "start")]
    assert calls == [
        ("reset_state", victim.id, "error"),
        ("stop", victim.id),
        ("start", victim.id),
    ]
    assert running.vim.servers[victim.id].status == "ACTIVE"
    stored = (await running.client.get(f"/v1/faults/{fault.id}", headers=ADMIN)).json()
    [item] = stored["recovery"]
    assert (item["action"], item["result"], item["attempts"]) == ("restart", "ok", 1)
    assert (item["from_host"], item["to_host"]) == (victim.host, victim.host)
    assert stored["trace"]["T03"] <= stored["trace"]["T11"]

    [arrival] = await eventually(
        lambda: [a for a in consumer.arrivals if a["path"] == "/recovery"], what="the outcome"
    )
    event = arrival["body"]["reason_data"]["event"]
    assert event["event_type"] == "compute.instance.recovery"
    traits = {t[0]: t[2] for t in event["traits"]}
    assert traits["instance_id"] == victim.id and traits["project_id"] == victim.project_id
    assert (traits["action"], traits["result"], traits["attempt"]) == ("restart", "ok", 1)
    assert traits["host"] == victim.host and traits["reason"]
    assert arrival["body"]["reason_data"]["root_cause"]["fault_id"] == fault.id


async def test_a_server_of_a_host_at_fault_is_left_to_host_recovery(running: Running) -> None:
    victim = running.vim.servers["00000000-0000-0000-0000-000000000001"]
    # Its host lost its management link (at fault, not marked down: nothing moves).
    await running.client.put(
        "/events",
        json=[
            {
                "time": iso(time.time()),
                "type": UNREACHABLE,
                "details": {"hostname": victim.host, "status": "down", "monitor": "test"},
            }
        ],
    )
    await eventually(
        lambda: running.service.inspector.active.get(("host", victim.host)), what="host fault"
    )
    await running.client.put("/events", json=[server_event(EXITED, victim.host, victim.id)])
    fault = await server_fault(running, victim.id)
    assert fault.recovery == []
    assert not any(c[0] in ("stop", "start", "migrate") for c in running.vim.calls)
