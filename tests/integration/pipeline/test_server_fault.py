"""UC2 through the embedded pipeline: one server fails, its owner hears once."""

from __future__ import annotations

import time
from typing import Any

from opendoctor.core.faults import Fault
from opendoctor.core.model import iso
from tests.conftest import eventually
from tests.e2e.contract.callback import check_callback, server_traits
from tests.integration.pipeline.conftest import ADMIN, Consumer, Running, alarm_for, as_project

EXITED = "compute.instance.lifecycle.exited"
MISSED = "compute.instance.heartbeat.missed"


def server_event(kind: str, host: str, instance_id: str, status: str = "down") -> dict[str, Any]:
    return {
        "time": iso(time.time()),
        "type": kind,
        "details": {
            "hostname": host,
            "instance_id": instance_id,
            "status": status,
            "monitor": "test",
            "reason": "process exited with signal 9",
        },
    }


async def server_fault(r: Running, instance_id: str) -> Fault:
    fault = await eventually(
        lambda: r.service.inspector.active.get(("server", instance_id)), what="server fault"
    )
    await r.service.inspector.done[fault.id].wait()
    return fault


async def test_the_owner_of_a_failed_server_is_told_once(
    running: Running, consumer: Consumer
) -> None:
    victim = running.vim.servers["00000000-0000-0000-0000-000000000001"]
    other = next(s for s in running.vim.servers.values() if s.host == victim.host and s != victim)
    alarms = {}
    for server in (victim, other):
        resp = await running.client.post(
            "/v2/alarms",
            json=alarm_for(server.id, consumer.url + "/failure", severity="moderate"),
            headers=as_project(server.project_id),
        )
        assert resp.status_code == 201
        alarms[server.id] = resp.json()

    before = time.time()
    resp = await running.client.put("/events", json=[server_event(EXITED, victim.host, victim.id)])
    assert resp.status_code == 202
    fault = await server_fault(running, victim.id)

    [arrival] = consumer.arrivals
    check_callback(
        arrival,
        alarm=alarms[victim.id],
        traits=server_traits(victim.id, victim.host, victim.project_id),
        root_cause={
            "fault_id": fault.id,
            "event_type": EXITED,
            "hostname": victim.host,
            "instance_id": victim.id,
            "reason": "process exited with signal 9",
            "alarm_id": fault.id,
            "alarm_type": EXITED,
            "alarm_resource": f"server:{victim.id}",
            "cause_alarm_id": fault.id,
        },
        window=(before, arrival["arrived"]),
    )
    [notice] = consumer.received
    assert notice["instance_id"] == victim.id and notice["state"] == "error"
    assert notice["root_cause"]["event_type"] == EXITED
    assert notice["root_cause"]["reason"] == "process exited with signal 9"
    assert ("reset_state", victim.id, "error") in running.vim.calls
    # A server fault leaves its host alone: not forced down, nothing evacuated.
    assert not any(c[0] in ("force_down", "evacuate") for c in running.vim.calls)
    assert {"T01", "T02", "T03", "T09"} <= set(fault.trace)

    # The guest heartbeat notices the same death a moment later: same fault, no new notice.
    await running.client.put("/events", json=[server_event(MISSED, victim.host, victim.id)])
    await running.service.bus.drain()
    assert fault.repeats == 1 and fault.signals == [EXITED, MISSED]
    assert len(consumer.received) == 1
    assert len(consumer.arrivals) == 1

    # The process comes back but the guest is still silent: still a fault.
    await running.client.put("/events", json=[server_event(EXITED, victim.host, victim.id, "up")])
    await running.service.bus.drain()
    assert fault.status == "active"
    # The heartbeat resumes: cleared, and the server is active again in the VIM.
    await running.client.put("/events", json=[server_event(MISSED, victim.host, victim.id, "up")])
    await running.service.bus.drain()
    assert fault.status == "cleared"
    assert running.vim.servers[victim.id].status == "ACTIVE"
    cleared = (await running.client.get(f"/v1/faults/{fault.id}", headers=ADMIN)).json()
    assert cleared["instance_id"] == victim.id and cleared["status"] == "cleared"


async def test_server_events_need_a_known_instance(running: Running) -> None:
    event = server_event(EXITED, "compute1", "x")
    del event["details"]["instance_id"]
    resp = await running.client.put("/events", json=[event])
    assert resp.status_code == 400
    assert "details.instance_id" in resp.json()["error"]["message"]

    resp = await running.client.put("/events", json=[server_event(EXITED, "compute1", "nope")])
    assert resp.status_code == 422
    assert resp.json()["error"]["errors"][0]["field"] == "details.instance_id"


async def test_a_server_on_a_failed_host_reported_down_tells_its_owner_nothing_more(
    running: Running, consumer: Consumer
) -> None:
    # What a storm brings besides its host events: each VM's own monitor (guest heartbeat)
    # reports the VMs of a dead host. Their owners heard of it from the host's fault.
    host = "compute1"
    victims = [s for s in running.vim.servers.values() if s.host == host]
    for server in victims:
        resp = await running.client.post(
            "/v2/alarms",
            json=alarm_for(server.id, consumer.url + "/failure"),
            headers=as_project(server.project_id),
        )
        assert resp.status_code == 201
    down = {
        "time": iso(time.time()),
        "type": "compute.host.down",
        "details": {"hostname": host, "status": "down", "monitor": "test"},
    }
    assert (await running.client.put("/events", json=[down])).status_code == 202
    await running.service.bus.drain()
    host_fault = running.service.inspector.active[("host", host)]
    await running.service.inspector.done[host_fault.id].wait()
    assert len(consumer.arrivals) == len(victims)

    events = [server_event(MISSED, host, s.id) for s in victims]
    assert (await running.client.put("/events", json=events)).status_code == 202
    await running.service.bus.drain()
    for server in victims:
        await server_fault(running, server.id)
    assert len(consumer.arrivals) == len(victims)
