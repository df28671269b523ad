"""The entity graph follows the VIM and is served at /v1/topology."""

from __future__ import annotations

from pathlib import Path

import httpx

from opendoctor.api.app import create_app
from opendoctor.service import Service
from tests.conftest import eventually
from tests.pipeline.conftest import ADMIN, Running, host_down, lab_vim, settings_for


def keys(body: dict[str, list[dict[str, str]]]) -> set[str]:
    return {v["key"] for v in body["vertices"]}


async def test_a_host_and_its_servers(running: Running) -> None:
    resp = await running.client.get("/v1/topology?root=host:compute1&depth=1", headers=ADMIN)
    assert resp.status_code == 200
    body = resp.json()
    on_host = {f"server:{s.id}" for s in running.vim.servers.values() if s.host == "compute1"}
    assert keys(body) == {"host:compute1", *on_host}
    assert {(e["source"], e["label"]) for e in body["edges"]} == {("host:compute1", "contains")}
    whole = (await running.client.get("/v1/topology", headers=ADMIN)).json()
    assert len(whole["vertices"]) == 3 + 6 and len(whole["edges"]) == 6


async def test_the_graph_follows_a_fault_and_its_recovery(running: Running) -> None:
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await eventually(
        lambda: running.service.inspector.active.get(("host", "compute1")), what="fault"
    )
    await running.service.inspector.done[fault.id].wait()

    async def moved() -> bool:
        body = (
            await running.client.get("/v1/topology?root=host:compute1&depth=1", headers=ADMIN)
        ).json()
        host = next(v for v in body["vertices"] if v["key"] == "host:compute1")
        resources = {k for k in keys(body) if not k.startswith("alarm:")}
        # The host is down, its servers moved away, and the fault's alarm is on it.
        return (
            host["state"] == "ERROR"
            and resources == {"host:compute1"}
            and f"alarm:{fault.id}" in keys(body)
        )

    await eventually(moved, what="the host down and its servers gone from it")
    graph = running.service.graph
    for server_id in fault.affected:
        [host] = graph.neighbors(f"server:{server_id}", "contains", direction="in")
        assert host.id != "compute1"


async def test_bad_topology_queries(running: Running) -> None:
    resp = await running.client.get("/v1/topology?root=host:nope", headers=ADMIN)
    assert resp.status_code == 404 and resp.json()["error"]["errors"][0]["field"] == "root"
    resp = await running.client.get("/v1/topology?limit=2", headers=ADMIN)
    assert resp.status_code == 400 and "give a root" in resp.json()["error"]["message"]
    resp = await running.client.get("/v1/topology", headers={"X-Project-Id": "p"})
    assert resp.status_code == 403


async def test_the_topology_file_adds_what_the_vim_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(
        "entities: [{type: switch, id: tor-1}]\n"
        "relations:\n"
        "  - {source: 'switch:tor-1', target: 'host:compute1', label: connects}\n"
        "  - {source: 'switch:tor-1', target: 'host:compute2', label: connects}\n"
    )
    settings = settings_for(tmp_path, inspector={"topology_file": str(path)})
    service = Service(settings, vim=lab_vim())
    await service.start()
    try:
        app = create_app(service, manage=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://od") as client:
            body = (
                await client.get("/v1/topology?root=switch:tor-1&depth=2", headers=ADMIN)
            ).json()
        found = keys(body)
        assert {"switch:tor-1", "host:compute1", "host:compute2"} <= found
        # Two hops: the servers behind the switch's hosts, not compute3's.
        behind = {
            f"server:{s.id}" for s in service.topology.servers.values() if s.host != "compute3"
        }
        assert behind <= found
        assert not any(k == "host:compute3" for k in found)
    finally:
        await service.stop()


async def test_rca_walks_from_a_server_to_the_failed_host(running: Running) -> None:
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await eventually(
        lambda: running.service.inspector.active.get(("host", "compute1")), what="fault"
    )
    await running.service.inspector.done[fault.id].wait()
    server_id = fault.affected[0]

    body = (await running.client.get(f"/v1/rca/{fault.id}/{server_id}", headers=ADMIN)).json()
    assert body["alarm"]["on"]["key"] == f"server:{server_id}"
    assert body["root_cause"]["key"] == f"alarm:{fault.id}"
    assert body["root_cause"]["on"]["key"] == "host:compute1"
    assert body["root_cause"]["name"] == "compute.host.down"

    top = (await running.client.get(f"/v1/rca/{fault.id}", headers=ADMIN)).json()
    assert top["causes"] == []
    assert {e["on"]["key"] for e in top["effects"]} == {f"server:{i}" for i in fault.affected}
    # The servers under the alarm are in error in the graph (deduced), the host too.
    host = running.service.graph.get("host:compute1")
    assert host is not None and host.aggregated_state == "ERROR"

    # Cleared: the alarms go, and so do the deduced states.
    await running.client.put("/events", json=[host_down("compute1", status="up")])
    await running.service.bus.drain()
    resp = await running.client.get(f"/v1/rca/{fault.id}", headers=ADMIN)
    assert resp.status_code == 404
    assert host.deduced_state is None
