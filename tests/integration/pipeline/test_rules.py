"""The built-in rule templates end to end through the embedded service: faults of hosts,
switches, power feeds, racks and ports, a cut link, and what each tells the owners."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opendoctor.app.service import Service
from opendoctor.core.faults import Fault
from opendoctor.core.model import iso
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Consumer,
    Running,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_host_fault import register_all

VM3 = "00000000-0000-0000-0000-000000000003"  # on compute3

TOPOLOGY = f"""
entities:
  - {{type: switch, id: tor-1, state: up}}
  - {{type: power_feed, id: pdu-a, state: up}}
  - {{type: rack, id: rack-2, state: up}}
  - {{type: port, id: port-1, state: active}}
relations:
  - {{source: "switch:tor-1", target: "host:compute1", label: connects}}
  - {{source: "power_feed:pdu-a", target: "rack:rack-2", label: powers}}
  - {{source: "rack:rack-2", target: "host:compute2", label: contains}}
  - {{source: "port:port-1", target: "server:{VM3}", label: attached}}
"""


async def _running(tmp_path: Path, db_url: str, recovery: bool) -> AsyncIterator[Running]:
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    settings = settings_for(
        tmp_path,
        database_url=db_url,
        recovery={"enabled": recovery, "serve_timeout": 2.0},
        inspector={"topology_file": topo},
    )
    async with serving(settings, lab_vim()) as r:
        yield r


@pytest.fixture
async def still(tmp_path: Path, db_url: str) -> AsyncIterator[Running]:
    """A service that does not evacuate: the servers stay where the fault hit them."""
    async for r in _running(tmp_path, db_url, recovery=False):
        yield r


@pytest.fixture
async def moving(tmp_path: Path, db_url: str) -> AsyncIterator[Running]:
    async for r in _running(tmp_path, db_url, recovery=True):
        yield r


def resource_down(type_: str, id_: str, status: str = "down") -> dict[str, Any]:
    return {
        "time": iso(time.time()),
        "type": "resource.down",
        "details": {"resource_type": type_, "resource_id": id_, "status": status},
    }


def event(type_: str, host: str, status: str = "down") -> dict[str, Any]:
    return {"type": type_, "details": {"hostname": host, "status": status}}


async def settled(r: Running, key: tuple[str, str]) -> Fault:
    fault = await eventually(lambda: r.service.inspector.active.get(key), what=f"fault {key}")
    await r.service.inspector.done[fault.id].wait()
    return fault


async def send(r: Running, body: Any) -> None:
    resp = await r.client.put("/events", json=body)
    assert resp.status_code == 202, resp.text
    await r.service.bus.drain()


async def rca(r: Running, alarm: str) -> dict[str, Any]:
    resp = await r.client.get(f"/v1/rca/{alarm}", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def changes(r: Running) -> list[tuple[str, ...]]:
    """The VIM calls that change something (reads left out)."""
    return [c for c in r.vim.calls if not c[0].startswith("list_") and c[0] != "server_groups"]


def servers_on(r: Running, host: str) -> set[str]:
    return {s.id for s in r.vim.servers.values() if s.host == host}


async def test_host_down_deduces_server_alarms_that_rca_walks_back(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    await send(still, [host_down("compute1")])
    fault = await settled(still, ("host", "compute1"))
    victims = servers_on(still, "compute1")
    assert set(fault.affected) == victims

    # Every owner heard, with the alarm at the root of the chain as the cause.
    assert {n["instance_id"] for n in consumer.received} == victims
    for note in consumer.received:
        cause = note["root_cause"]
        assert cause["alarm_id"] == fault.id and cause["alarm_type"] == "compute.host.down"
        assert cause["alarm_resource"] == "host:compute1"

    server_id = sorted(victims)[0]
    body = await rca(still, f"instance.host_down@server:{server_id}")
    assert body["alarm"]["on"]["key"] == f"server:{server_id}"
    assert body["root_cause"]["key"] == f"alarm:{fault.id}"
    assert body["root_cause"]["on"]["key"] == "host:compute1"
    top = await rca(still, fault.id)
    assert top["causes"] == []
    assert {e["on"]["key"] for e in top["effects"]} == {f"server:{i}" for i in victims}
    host = still.service.graph.get("host:compute1")
    assert host is not None and host.aggregated_state == "ERROR"

    # Cleared: the alarms go, and so do the deduced states; the host is marked up.
    await send(still, [host_down("compute1", status="up")])
    assert (await still.client.get(f"/v1/rca/{fault.id}", headers=ADMIN)).status_code == 404
    assert host.deduced_state is None
    assert still.service.engine.alarms == {}
    assert still.vim.hosts["compute1"].forced_down is False


async def test_switch_down_tells_owners_behind_it_and_marks_nothing_down(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    await send(still, [resource_down("switch", "tor-1")])
    fault = await settled(still, ("switch", "tor-1"))

    assert {n["instance_id"] for n in consumer.received} == servers_on(still, "compute1")
    for note in consumer.received:
        assert note["state"] == "error"
        assert note["root_cause"]["alarm_resource"] == "switch:tor-1"
        assert note["root_cause"]["alarm_id"] == fault.id
    # The hosts still run: not forced down, not evacuated; degraded in the graph.
    assert not any(c[0] in ("force_down", "evacuate") for c in still.vim.calls)
    host = still.service.graph.get("host:compute1")
    assert host is not None and host.aggregated_state == "SUBOPTIMAL"

    server_id = sorted(servers_on(still, "compute1"))[0]
    chain = await rca(still, f"instance.unreachable@server:{server_id}")
    assert [c["name"] for c in chain["causes"]] == ["host.uplink_down", "resource.down"]
    assert chain["root_cause"]["on"]["key"] == "switch:tor-1"

    await send(still, [resource_down("switch", "tor-1", status="up")])
    assert still.service.engine.alarms == {}
    assert host.deduced_state is None


async def test_power_feed_takes_down_its_rack_and_the_hosts_in_it(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    await send(still, [resource_down("power_feed", "pdu-a")])
    fault = await settled(still, ("power_feed", "pdu-a"))

    assert ("force_down", "compute2", "True") in still.vim.calls
    assert {n["instance_id"] for n in consumer.received} == servers_on(still, "compute2")
    assert set(fault.affected) == servers_on(still, "compute2")
    server_id = sorted(servers_on(still, "compute2"))[0]
    chain = await rca(still, f"instance.host_down@server:{server_id}")
    assert [c["name"] for c in chain["causes"]] == [
        "host.rack_down",
        "rack.power_lost",
        "resource.down",
    ]
    assert chain["root_cause"]["on"]["key"] == "power_feed:pdu-a"

    await send(still, [resource_down("power_feed", "pdu-a", status="up")])
    assert still.vim.hosts["compute2"].forced_down is False
    assert still.service.engine.alarms == {}


async def test_port_down_degrades_its_server_without_alarming_the_owner(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    await send(still, [resource_down("port", "port-1")])
    await settled(still, ("port", "port-1"))
    server = still.service.graph.get(f"server:{VM3}")
    assert server is not None and server.aggregated_state == "SUBOPTIMAL"
    alarm = still.service.graph.get(f"alarm:instance.port_down@server:{VM3}")
    assert alarm is not None and alarm.state == "WARNING"
    assert consumer.received == []
    assert changes(still) == []


async def test_a_cut_link_is_not_a_dead_host_until_every_path_is_lost(
    moving: Running, consumer: Consumer
) -> None:
    await register_all(moving, consumer)
    await send(moving, [event("compute.host.unreachable", "compute1")])
    fault = await settled(moving, ("host", "compute1"))
    # Unreachable: a warning, the host degraded; nothing marked down, nobody evacuated,
    # no owner told their server failed.
    assert changes(moving) == []
    assert consumer.received == []
    host = moving.service.graph.get("host:compute1")
    assert host is not None and host.aggregated_state == "SUBOPTIMAL"
    listed = (await moving.client.get("/v1/alarms", headers=ADMIN)).json()
    assert listed["counts"] == {"WARNING": 1}

    # The second path goes silent too: now it is down, and the host_down rule acts.
    await send(moving, [event("compute.host.down", "compute1")])
    await moving.service.inspector.done[fault.id].wait()
    assert fault.type == "compute.host.down"
    assert ("force_down", "compute1", "True") in moving.vim.calls
    await eventually(
        lambda: {n["instance_id"] for n in consumer.received} == servers_on_before(moving),
        what="owners told",
    )

    # Back on every path: both reports close and the fault clears.
    await send(moving, [event("compute.host.down", "compute1", "up")])
    assert fault.status == "active"
    await send(moving, [event("compute.host.unreachable", "compute1", "up")])
    assert fault.status == "cleared"
    assert moving.vim.hosts["compute1"].forced_down is False


def servers_on_before(r: Running) -> set[str]:
    """Servers that started on compute1 (recovery may have moved them since)."""
    return {s.id for s in r.vim.servers.values() if int(s.name.removeprefix("vm")) % 3 == 1}


async def test_a_server_moved_onto_a_failed_host_is_reported(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    await send(still, [host_down("compute3")])
    await settled(still, ("host", "compute3"))
    told = {n["instance_id"] for n in consumer.received}
    assert told == servers_on(still, "compute3")

    # A server lands on the failed host after the fault (the VIM's change feed says so):
    # the rule holds for it too, so its owner is told and it is set to error.
    mover = sorted(servers_on(still, "compute1"))[0]
    await still.vim.migrate(mover, "compute3")
    await eventually(
        lambda: mover in {n["instance_id"] for n in consumer.received}, what="owner told"
    )
    await eventually(lambda: ("reset_state", mover, "error") in still.vim.calls, what="error")


async def test_resource_events_name_a_known_resource(still: Running) -> None:
    resp = await still.client.put("/events", json=[resource_down("switch", "nope")])
    assert resp.status_code == 422
    assert resp.json()["error"]["errors"][0]["field"] == "details.resource_id"
    resp = await still.client.put("/events", json=[resource_down("host", "compute1")])
    assert resp.status_code == 400
    resp = await still.client.put(
        "/events", json=[{"type": "resource.down", "details": {"status": "down"}}]
    )
    assert resp.status_code == 400


async def test_topology_added_through_the_api_takes_part_in_the_rules(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    body = {
        "entities": [{"type": "switch", "id": "tor-3", "state": "up"}],
        "relations": [
            {"source": "switch:tor-3", "target": "host:compute3", "label": "connects"},
            {"source": "switch:tor-3", "target": "host:compute9", "label": "connects"},
        ],
    }
    resp = await still.client.post("/v1/topology", json=body, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    added = resp.json()
    assert (added["entities"], added["relations"]) == (1, 2)
    assert any("host:compute9" in w for w in added["warnings"])  # a placeholder

    await send(still, [resource_down("switch", "tor-3")])
    await settled(still, ("switch", "tor-3"))
    assert {n["instance_id"] for n in consumer.received} == servers_on(still, "compute3")

    # Taking the switch out of the graph undoes what the rules deduced through it.
    resp = await still.client.delete("/v1/topology/switch:tor-3", headers=ADMIN)
    assert resp.status_code == 204
    assert still.service.engine.alarms == {}
    host = still.service.graph.get("host:compute3")
    assert host is not None and host.deduced_state is None

    # What the VIM owns, and alarms, are not the API's to remove.
    resp = await still.client.delete("/v1/topology/host:compute1", headers=ADMIN)
    assert resp.status_code == 409
    assert "VIM" in resp.json()["error"]["message"]
    resp = await still.client.delete("/v1/topology/switch:nope", headers=ADMIN)
    assert resp.status_code == 404
    bad = {"entities": [{"type": "switch"}]}
    resp = await still.client.post("/v1/topology", json=bad, headers=ADMIN)
    assert resp.status_code == 400
    assert resp.json()["error"]["errors"][0]["field"] == "entities[0].id"


async def test_a_dual_homed_host_is_cut_off_only_when_both_its_switches_fail(
    still: Running, consumer: Consumer
) -> None:
    await register_all(still, consumer)
    body = {
        "entities": [
            {"type": "switch", "id": "tor-3a", "state": "up"},
            {"type": "switch", "id": "tor-3b", "state": "up"},
        ],
        "relations": [
            {"source": "switch:tor-3a", "target": "host:compute3", "label": "connects"},
            {"source": "switch:tor-3b", "target": "host:compute3", "label": "connects"},
        ],
    }
    resp = await still.client.post("/v1/topology", json=body, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    host = still.service.graph.get("host:compute3")
    assert host is not None

    # One switch: compute3 still has a way up. A warning, nobody told, nothing degraded.
    await send(still, [resource_down("switch", "tor-3a")])
    await settled(still, ("switch", "tor-3a"))
    assert consumer.received == []
    assert set(still.service.engine.alarms) == {"alarm:host.uplink_degraded@host:compute3"}
    assert host.deduced_state is None

    # Both: cut off. Each owner is told once, with a failed switch as the root cause.
    await send(still, [resource_down("switch", "tor-3b")])
    await settled(still, ("switch", "tor-3b"))
    told = [n["instance_id"] for n in consumer.received]
    assert sorted(told) == sorted(servers_on(still, "compute3"))
    roots = {n["root_cause"]["alarm_resource"] for n in consumer.received}
    assert roots <= {"switch:tor-3a", "switch:tor-3b"}
    assert host.aggregated_state == "SUBOPTIMAL"
    assert not any(c[0] in ("force_down", "evacuate") for c in still.vim.calls)

    # One comes back: reachable again, redundancy still lost.
    await send(still, [resource_down("switch", "tor-3a", status="up")])
    assert set(still.service.engine.alarms) == {"alarm:host.uplink_degraded@host:compute3"}
    assert host.deduced_state is None


FENCE_CUT_HOSTS = """\
name: fence_cut_hosts
description: {description}
entities:
  alarm: {{category: ALARM, name: compute.host.unreachable}}
  host: {{type: host}}
scenarios:
  - condition: alarm [on] host
    actions:
      - mark_down: {{target: host}}
"""


async def test_changing_templates_does_not_redo_or_forget_their_effects(still: Running) -> None:
    post = FENCE_CUT_HOSTS.format(description="v1")
    resp = await still.client.post("/v1/templates", content=post, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    await send(still, [event("compute.host.unreachable", "compute1")])
    await settled(still, ("host", "compute1"))
    downs = [c for c in still.vim.calls if c[0] == "force_down"]
    assert downs == [("force_down", "compute1", "True")]

    # A new version that decides the same does not do it a second time.
    post = FENCE_CUT_HOSTS.format(description="v2")
    resp = await still.client.post("/v1/templates", content=post, headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["effects"]["mark_downs"] == 0
    assert [c for c in still.vim.calls if c[0] == "force_down"] == downs

    # Deleting it takes its reason away: the host is marked up again at once.
    resp = await still.client.delete("/v1/templates/fence_cut_hosts", headers=ADMIN)
    assert resp.status_code == 204
    assert still.vim.hosts["compute1"].forced_down is False


async def test_the_consistency_check_drops_what_the_vim_lost_silently(
    tmp_path: Path, db_url: str
) -> None:
    vim = lab_vim()
    settings = settings_for(tmp_path, database_url=db_url, inspector={"consistency_interval": 0.05})
    service = Service(settings, vim=vim)
    await service.start()
    try:
        gone = next(iter(vim.servers))
        # Deleted behind the change feed's back (a lost message, say).
        del vim.servers[gone]
        assert service.graph.get(f"server:{gone}") is not None
        await eventually(
            lambda: service.graph.get(f"server:{gone}") is None, what="stale server dropped"
        )
        assert gone not in service.topology.servers
        assert service.graph.get("host:compute1") is not None
    finally:
        await service.stop()


# The switch itself is reported: a notification that names no project.
SWITCH_WATCH = """\
name: switch_watch
description: Operators hear of a switch that failed.
entities:
  alarm: {category: ALARM, name: resource.down}
  switch: {type: switch}
scenarios:
  - condition: alarm [on] switch
    actions:
      - notify: {target: switch, event_type: infra.switch.down, state: down}
"""


async def test_a_switch_is_reported_to_the_operators_not_to_every_tenant(
    still: Running, consumer: Consumer
) -> None:
    resp = await still.client.post(
        "/v1/templates", headers={**ADMIN, "content-type": "application/yaml"}, content=SWITCH_WATCH
    )
    assert resp.status_code == 201, resp.text
    for project, path in (("admin", "/operators"), ("project-a", "/tenant")):
        body = {
            "name": f"switches-{project}",
            "type": "event",
            "event_rule": {"event_type": "infra.switch.*", "query": []},
            "alarm_actions": [consumer.url + path],
        }
        headers = ADMIN if project == "admin" else {"X-Project-Id": project, "X-User-Id": "u"}
        resp = await still.client.post("/v2/alarms", json=body, headers=headers)
        assert resp.status_code == 201, resp.text

    await send(still, [resource_down("switch", "tor-1")])
    # Settled once every matching alarm's first attempt is made.
    await settled(still, ("switch", "tor-1"))
    # The tenant's alarm matches the event type, but the switch is not its resource.
    assert [a["path"] for a in consumer.arrivals] == ["/operators"]
    alarms = {a.name: a for a in still.service.index}
    assert alarms["switches-admin"].state == "alarm"
    assert alarms["switches-project-a"].state != "alarm"
