"""HA as a service on the lab, the whole service in its own process: a cluster declared
through `/v1/clusters`, then each policy operation carried out on a real failure (a
killed VM, a failed host, an unhealthy service inside a VM), with the cluster's state,
its history and what its owner is told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, owner, running_stack
from tests.conftest import eventually

PROJECT = "project-a"
SPEC = LabSpec(hosts=3, vms=0, projects=[PROJECT], ip_prefix="127.141")


async def call(s: Stack, method: str, path: str, body: Any = None) -> Any:
    resp = await s.http.request(method, s.api + path, json=body, headers=owner(PROJECT))
    assert resp.status < 300, (method, path, resp.status, resp.body[:500])
    return resp.json() if resp.body else None


async def known(s: Stack, *server_ids: str) -> None:
    async def all_known() -> bool:
        return set(server_ids) <= {v["id"] for v in await s.get("/v1/servers")}

    await eventually(all_known, what="the service to learn about the servers")


async def subscribe(s: Stack, event_type: str, path: str) -> str:
    """An Aodh event alarm of the owner on `event_type`, calling its consumer at `path`."""
    consumer = s.consumers[PROJECT].ready
    body = {
        "name": f"ha-{path.strip('/')}",
        "type": "event",
        "repeat_actions": True,
        "alarm_actions": [consumer + path],
        "event_rule": {"event_type": event_type, "query": []},
    }
    await call(s, "POST", "/v2/alarms", body)
    return consumer


async def arrivals(s: Stack, path: str) -> list[dict[str, Any]]:
    consumer = s.consumers[PROJECT].ready
    got = (await s.http.get(consumer + "/arrivals")).json()
    return [a for a in got if a["path"] == path]


def traits_of(arrival: dict[str, Any]) -> dict[str, Any]:
    return {t[0]: t[2] for t in arrival["body"]["reason_data"]["event"]["traits"]}


async def cluster(
    s: Stack,
    level: str,
    nodes: list[dict[str, Any]],
    *policies: dict[str, Any],
    services: list[dict[str, Any]] = (),
) -> tuple[str, list[str]]:  # type: ignore[assignment]
    cid = (await call(s, "POST", "/v1/clusters", {"name": "web", "level": level}))["id"]
    ids = [(await call(s, "POST", f"/v1/clusters/{cid}/nodes", n))["id"] for n in nodes]
    for body in services:
        await call(s, "POST", f"/v1/clusters/{cid}/services", body)
    for body in policies:
        await call(s, "POST", f"/v1/clusters/{cid}/policies", body)
    return cid, ids


async def history_until(s: Stack, cid: str, operation: str, outcome: str) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        found = await call(s, "GET", f"/v1/clusters/{cid}/history")
        hit = any(e["operation"] == operation and e["outcome"] == outcome for e in found)
        return found if hit else None

    try:
        return await eventually(done, timeout=60, what=f"{operation} {outcome} in the history")
    except AssertionError as exc:
        seen = steps(await call(s, "GET", f"/v1/clusters/{cid}/history"))
        raise AssertionError(f"{exc}; the history: {seen}") from None


async def settled_state(s: Stack, cid: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        state = await call(s, "GET", f"/v1/clusters/{cid}/state")
        return state if state["state"] != "recovering" else None

    return await eventually(settled, timeout=30, what="the cluster to settle")


def steps(history: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    """(operation, outcome) of each entry but the cluster's state changes."""
    return [(e["operation"], e["outcome"]) for e in history if e["outcome"] != "changed"]


async def test_a_killed_node_is_restarted_by_its_policy(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        web = await lab.create_server("web1", PROJECT, host="compute1")
        await known(s, web.id)
        restart = {"name": "restart", "operation": "restart", "timeout": 20}
        cid, _ = await cluster(s, "vm", [{"ref": web.id}], restart)
        await subscribe(s, "haas.cluster.recovery", "/ha")
        await lab.kill_server(web.id)
        history = await history_until(s, cid, "restart", "ok")
        [told] = await eventually(lambda: arrivals(s, "/ha"), what="the owner told")
        resp = await s.http.get(web.endpoint or "")
        again = await lab.server(web.id)
        state = await settled_state(s, cid)
    assert steps(history)[:3] == [(None, "started"), ("restart", "started"), ("restart", "ok")]
    assert (resp.status, again.status, again.host) == (200, "ACTIVE", "compute1")
    traits = traits_of(told)
    assert (traits["cluster_id"], traits["instance_id"], traits["action"], traits["result"]) == (
        cid,
        web.id,
        "restart",
        "ok",
    )
    assert state["state"] == "ok" and state["nodes"][0]["state"] == "ok"


async def test_a_killed_node_is_rebuilt_by_its_policy(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        web = await lab.create_server("web1", PROJECT, host="compute2")
        await known(s, web.id)
        cid, _ = await cluster(
            s, "vm", [{"ref": web.id}], {"name": "rebuild", "operation": "rebuild", "timeout": 30}
        )
        await lab.kill_server(web.id)
        history = await history_until(s, cid, "rebuild", "ok")
        detail = await lab.server_detail(web.id)
        resp = await s.http.get(web.endpoint or "")
    assert ("rebuild", "ok") in steps(history)
    assert (detail["rebuilds"], detail["host"], resp.status) == (1, "compute2", 200)


async def test_nodes_of_a_failed_host_are_evacuated_into_the_fail_over_domain(
    tmp_path: Path,
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        web = await lab.create_server("web1", PROJECT, host="compute1")
        other = await lab.create_server("other", PROJECT, host="compute1")
        await known(s, web.id, other.id)
        evacuate = {"name": "evac", "operation": "evacuate", "domain": ["compute3"], "timeout": 30}
        cid, _ = await cluster(s, "vm", [{"ref": web.id}], evacuate)
        await lab.fail_host("compute1")
        history = await history_until(s, cid, "evacuate", "ok")
        moved = await lab.server(web.id)

        async def other_moved() -> bool:
            return (await lab.server(other.id)).host != "compute1"

        # The server of no cluster is host recovery's: moved too, once.
        await eventually(other_moved, timeout=60, what="host recovery to move the other")

        async def recorded() -> dict[str, Any] | None:
            # The fault's record, once it has both servers' items (saved when both
            # recoveries are over).
            faults = [f for f in await s.get("/v1/faults") if f["hostname"] == "compute1"]
            found = {i["server_id"]: i for f in faults for i in f["recovery"]}
            return found if {web.id, other.id} <= set(found) else None

        items = await eventually(recorded, timeout=30, what="the fault's recovery record")
    assert (moved.host, moved.status) == ("compute3", "ACTIVE")
    evacuations = [e for e in history if e["operation"] == "evacuate"]
    assert [e["outcome"] for e in evacuations] == ["started", "ok"]
    assert items[web.id]["method"] == "haas:web" and items[web.id]["to_host"] == "compute3"
    assert items[other.id]["method"] != "haas:web" and items[other.id]["attempts"] == 1


async def test_switch_over_swaps_the_roles_and_the_owner_is_told(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        first = await lab.create_server("web1", PROJECT, host="compute1")
        second = await lab.create_server("web2", PROJECT, host="compute2", role="standby")
        await known(s, first.id, second.id)
        cid, (a, _) = await cluster(
            s,
            "vm",
            [{"ref": first.id, "role": "active"}, {"ref": second.id, "role": "standby"}],
            {"name": "switch", "operation": "switch-over"},
            {"name": "repair", "operation": "restart", "priority": 1, "timeout": 20},
        )
        await call(s, "POST", f"/v1/clusters/{cid}/fencing-devices", {"node_id": a, "kind": "vim"})
        await subscribe(s, "haas.cluster.switchover", "/switchover")
        await lab.kill_server(first.id)
        [told] = await eventually(
            lambda: arrivals(s, "/switchover"), timeout=30, what="the owner told of the switch-over"
        )
        history = await history_until(s, cid, "restart", "ok")
        state = await settled_state(s, cid)
    traits = traits_of(told)
    assert (traits["active"], traits["previous"], traits["project_id"]) == (
        second.id,
        first.id,
        PROJECT,
    )
    roles = {n["ref"]: (n["role"], n["state"]) for n in state["nodes"]}
    assert roles == {first.id: ("standby", "ok"), second.id: ("active", "ok")}
    assert state["active"] == [second.id] and state["state"] == "ok"
    assert [x for x in steps(history) if x[0]][:2] == [
        ("switch-over", "started"),
        ("switch-over", "ok"),
    ]


async def test_an_unhealthy_service_is_restarted_through_the_guest_agent(tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        lab = s.lab.client
        web = await lab.create_server("web1", PROJECT, host="compute1", services=["http", "db"])
        await known(s, web.id)
        cid, _ = await cluster(
            s,
            "application",
            [{"ref": web.id}],
            {
                "name": "fix-http",
                "operation": "restart",
                "applies_to": "service",
                "services": ["http"],
                "timeout": 20,
            },
            {"name": "rebuild", "operation": "rebuild", "priority": 5},
            services=({"name": "http", "guest_name": "http"},),
        )
        await lab.set_health(web.id, False, service="http")
        history = await history_until(s, cid, "restart", "ok")
        detail = await lab.server_detail(web.id)
    assert history[0]["what"] == "services failed: http"
    assert ("rebuild", "started") not in steps(history)
    services = {x["name"]: x for x in detail["services"]}
    assert services["http"] == {"name": "http", "healthy": True, "restarts": 1}
    assert services["db"]["restarts"] == 0 and detail.get("rebuilds", 0) == 0


def test_the_haas_demo_command_passes(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", "demo", "haas", "--json", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    story = json.loads(proc.stdout)["haas"]
    assert story["ok"] and story["problems"] == []
    assert (story["service_restarts"], story["rebuilds"]) == (1, 1)
    heard = {(p["to"], p["peer"], p["state"]) for p in story["peer_states"]}
    assert {("web-2", "web-1", "failed"), ("web-3", "web-2", "active")} <= heard
    assert story["roles"] == {
        "web-1": ["standby", "ok"], "web-2": ["active", "ok"], "web-3": ["standby", "ok"],
    }  # fmt: skip
