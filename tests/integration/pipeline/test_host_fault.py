"""UC1 through the embedded pipeline: a host fault reaches every owner, the VIM, recovery."""

from __future__ import annotations

import time
from typing import Any

from opendoctor.core.faults import Fault
from tests.conftest import eventually
from tests.e2e.contract.callback import check_callback, server_traits
from tests.integration.pipeline.conftest import (
    ADMIN,
    PROJECT_A,
    Consumer,
    Running,
    alarm_for,
    as_project,
    host_down,
)


async def register_all(r: Running, consumer: Consumer) -> dict[str, str]:
    """One alarm per server, created by the server's owner; returns server id -> alarm id."""
    return {k: v["alarm_id"] for k, v in (await register_alarms(r, consumer)).items()}


async def register_alarms(r: Running, consumer: Consumer) -> dict[str, dict[str, Any]]:
    """One alarm per server, created by the server's owner; returns server id -> the
    alarm as the API answered it."""
    alarms = {}
    for server in r.vim.servers.values():
        resp = await r.client.post(
            "/v2/alarms",
            json=alarm_for(server.id, consumer.url + "/failure"),
            headers=as_project(server.project_id),
        )
        assert resp.status_code == 201, resp.text
        alarms[server.id] = resp.json()
    return alarms


async def settled_fault(r: Running, host: str) -> Fault:
    fault = await eventually(lambda: r.service.inspector.active.get(("host", host)), what="fault")
    await r.service.inspector.done[fault.id].wait()
    return fault


async def test_owners_of_every_vm_on_the_host_are_notified(
    running: Running, consumer: Consumer
) -> None:
    created = await register_alarms(running, consumer)
    alarms = {k: v["alarm_id"] for k, v in created.items()}
    on_host = {s.id for s in running.vim.servers.values() if s.host == "compute1"}

    before = time.time()
    resp = await running.client.put("/events", json=[host_down("compute1")])
    assert resp.status_code == 202
    fault = await settled_fault(running, "compute1")

    # Each owner got one callback, exactly as the contract has it.
    assert sorted(a["body"]["alarm_id"] for a in consumer.arrivals) == sorted(
        alarms[s] for s in on_host
    )
    for arrival in consumer.arrivals:
        traits = {t[0]: t[2] for t in arrival["body"]["reason_data"]["event"]["traits"]}
        server = running.vim.servers[traits["instance_id"]]
        check_callback(
            arrival,
            alarm=created[server.id],
            traits=server_traits(server.id, "compute1", server.project_id),
            root_cause={
                "fault_id": fault.id,
                "event_type": "compute.host.down",
                "hostname": "compute1",
                "alarm_id": fault.id,
                "alarm_type": "compute.host.down",
                "alarm_resource": "host:compute1",
                "cause_alarm_id": fault.id,
            },
            window=(before, arrival["arrived"]),
        )

    got = {r["instance_id"]: r for r in consumer.received}
    assert set(got) == on_host
    for server_id, record in got.items():
        assert record["alarm_id"] == alarms[server_id]
        assert record["event_type"] == "compute.instance.update"
        assert record["state"] == "error"
        assert record["host"] == "compute1"
        assert record["previous"] == "insufficient data"
        assert record["current"] == "alarm"
        assert record["root_cause"]["hostname"] == "compute1"
        assert record["request_id"].startswith("req-")
    # The VIM was told: host forced down, each of its servers set to error.
    assert ("force_down", "compute1", "True") in running.vim.calls
    for server_id in on_host:
        assert ("reset_state", server_id, "error") in running.vim.calls
    # Recovery moved every server off the failed host.
    assert {i.result for i in fault.recovery} == {"ok"}
    assert all(running.vim.servers[s].host != "compute1" for s in on_host)
    assert set(fault.trace) >= {"T01", "T02", "T03", "T04", "T09", "T11"}
    assert fault.trace["T01"] <= fault.trace["T02"] <= fault.trace["T09"]

    # Alarms moved to `alarm` and their history says so.
    some = next(iter(on_host))
    owner = running.vim.servers[some].project_id
    state = await running.client.get(f"/v2/alarms/{alarms[some]}/state", headers=as_project(owner))
    assert state.json() == "alarm"


async def test_servers_on_other_hosts_are_left_alone(running: Running, consumer: Consumer) -> None:
    await register_all(running, consumer)
    await running.client.put("/events", json=[host_down("compute2")])
    await settled_fault(running, "compute2")
    hosts = {r["host"] for r in consumer.received}
    assert hosts == {"compute2"}
    assert not any(c[0] == "force_down" and c[1] != "compute2" for c in running.vim.calls)


async def test_repeated_reports_of_one_fault_notify_once(
    running: Running, consumer: Consumer
) -> None:
    await register_all(running, consumer)
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await settled_fault(running, "compute1")
    before = len(consumer.received)
    for _ in range(3):
        assert (await running.client.post("/events", json=host_down("compute1"))).status_code == 202
    await running.service.bus.drain()
    assert fault.repeats == 3
    assert len(consumer.received) == before == 2


async def test_up_clears_the_fault_and_marks_the_host_up(
    running: Running, consumer: Consumer
) -> None:
    await running.client.put("/events", json=[host_down("compute3")])
    fault = await settled_fault(running, "compute3")
    await running.client.put("/events", json=[host_down("compute3", status="up")])
    await running.service.bus.drain()
    assert fault.status == "cleared"
    assert running.vim.hosts["compute3"].forced_down is False
    listed = (await running.client.get("/v1/faults?status=cleared", headers=ADMIN)).json()
    assert [f["id"] for f in listed] == [fault.id]


async def test_a_host_the_vim_will_not_mark_up_yet_is_asked_again(
    running: Running, consumer: Consumer
) -> None:
    """Nova refuses to force a host up until its nova-compute has restarted and closed
    the evacuations from it: the host must not stay fenced for good."""
    await running.client.put("/events", json=[host_down("compute3")])
    fault = await settled_fault(running, "compute3")
    running.vim.fail = {"force_down"}
    await running.client.put("/events", json=[host_down("compute3", status="up")])
    await running.service.bus.drain()
    assert fault.status == "cleared"
    assert running.vim.hosts["compute3"].forced_down is True

    def asked() -> int:
        return running.vim.calls.count(("force_down", "compute3", "False"))

    first = asked()
    await eventually(lambda: asked() > first, 10, "the VIM asked again")
    running.vim.fail = set()
    await eventually(
        lambda: not running.vim.hosts["compute3"].forced_down, 10, "compute3 marked up"
    )
    assert running.service.topology.hosts["compute3"].state == "up"


async def test_owners_hear_even_when_the_vim_fails(running: Running, consumer: Consumer) -> None:
    await register_all(running, consumer)
    running.vim.fail = {"force_down", "reset_state"}
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await settled_fault(running, "compute1")
    assert len(consumer.received) == 2
    assert "T09" in fault.trace
    assert "T04" not in fault.trace and "T03" not in fault.trace
    # No host marked down, so no evacuation was attempted.
    assert fault.recovery == []


async def test_an_owner_only_hears_of_its_own_servers(running: Running, consumer: Consumer) -> None:
    victim = next(s for s in running.vim.servers.values() if s.project_id == PROJECT_A)
    # Project B subscribes to project A's server: it must never be told.
    resp = await running.client.post(
        "/v2/alarms",
        json=alarm_for(victim.id, consumer.url + "/spy"),
        headers=as_project("project-b"),
    )
    assert resp.status_code == 201
    await running.client.put("/events", json=[host_down(victim.host)])
    await settled_fault(running, victim.host)
    assert [r for r in consumer.received if r["path"] == "/spy"] == []


async def test_fault_timeline_and_notifications_are_served(
    running: Running, consumer: Consumer
) -> None:
    await register_all(running, consumer)
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await settled_fault(running, "compute1")
    body = (await running.client.get(f"/v1/faults/{fault.id}", headers=ADMIN)).json()
    assert [row["checkpoint"] for row in body["timeline"]][:2] == ["T01", "T02"]
    assert {n["status"] for n in body["notifications"]} == {"delivered"}
    assert len(body["notifications"]) == 2
    assert {i["result"] for i in body["recovery"]} == {"ok"}
    metrics = (await running.client.get("/metrics")).text
    assert 'opendoctor_stage_seconds_count{checkpoint="T09"}' in metrics
