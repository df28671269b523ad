"""The entity graph follows the VIM and is served at /v1/topology."""

from __future__ import annotations

from pathlib import Path

import httpx

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from tests.conftest import MONITOR, eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    PROJECT_A,
    Running,
    host_down,
    lab_vim,
    serving,
    settings_for,
)
from tests.integration.pipeline.test_rules import resource_down, settled


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


async def test_a_project_sees_its_own_servers_and_nothing_else(running: Running) -> None:
    headers = {"X-Project-Id": PROJECT_A, "X-Roles": "member"}
    body = (await running.client.get("/v1/topology", headers=headers)).json()
    mine = {f"server:{s.id}" for s in running.vim.servers.values() if s.project_id == PROJECT_A}
    assert keys(body) == mine and body["edges"] == []
    # Not by a root, nor by a query either: another project's, or the hosts, stay out.
    around = await running.client.get("/v1/topology?root=host:compute1&depth=1", headers=headers)
    assert around.status_code == 404  # as if there were no such host
    root = next(iter(mine))
    around = await running.client.get(f"/v1/topology?root={root}&depth=2", headers=headers)
    assert keys(around.json()) == {root}
    asked = await running.client.get(
        "/v1/topology", params={"query": '{"==": {"type": "host"}}'}, headers=headers
    )
    assert asked.json()["vertices"] == []


async def test_the_topology_file_adds_what_the_vim_does_not_know(
    tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(
        "entities: [{type: switch, id: tor-1}]\n"
        "relations:\n"
        "  - {source: 'switch:tor-1', target: 'host:compute1', label: connects}\n"
        "  - {source: 'switch:tor-1', target: 'host:compute2', label: connects}\n"
    )
    settings = settings_for(tmp_path, database_url=db_url, inspector={"topology_file": str(path)})
    service = Service(settings, vim=lab_vim())
    await service.start()
    try:
        app = create_app(service.facade, manage=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://od"
        ) as client:
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


async def topology(running: Running, **params: str | int) -> httpx.Response:
    return await running.client.get("/v1/topology", params=params, headers=ADMIN)


async def test_a_query_keeps_the_vertices_it_matches(running: Running) -> None:
    servers = {f"server:{s.id}" for s in running.vim.servers.values()}
    body = (await topology(running, query='{"==": {"type": "server"}}')).json()
    # No edge survives: each has a host at one end.
    assert keys(body) == servers and body["edges"] == []

    # From a root: the host and one of its servers, and the edge between them only.
    vm1 = next(s for s in running.vim.servers.values() if s.name == "vm1")
    query = '{"or": [{"==": {"type": "host"}}, {"==": {"name": "vm1"}}]}'
    body = (await topology(running, root=f"host:{vm1.host}", depth=1, query=query)).json()
    assert keys(body) == {f"host:{vm1.host}", f"server:{vm1.id}"}
    assert body["edges"] == [
        {"source": f"host:{vm1.host}", "target": f"server:{vm1.id}", "label": "contains"}
    ]

    # A query may leave out the root itself.
    body = (
        await topology(running, root="host:compute1", query='{"==": {"type": "server"}}')
    ).json()
    assert "host:compute1" not in keys(body) and keys(body) <= servers and body["edges"] == []

    # Nothing matches: an empty graph, not an error.
    body = (await topology(running, query='{"regex": {"name": "^nothing"}}')).json()
    assert body == {"vertices": [], "edges": []}


async def test_a_query_follows_states(running: Running) -> None:
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await eventually(
        lambda: running.service.inspector.active.get(("host", "compute1")), what="fault"
    )
    await running.service.inspector.done[fault.id].wait()
    # States are upper case in the graph; the query's "error" matches them anyway.
    query = '{"and": [{"==": {"type": "host"}}, {"==": {"state": "error"}}]}'
    body = (await topology(running, query=query)).json()
    assert keys(body) == {"host:compute1"}
    [host] = body["vertices"]
    assert host["state"] == "ERROR"
    alarms = (await topology(running, query='{"==": {"category": "alarm"}}')).json()
    assert f"alarm:{fault.id}" in keys(alarms)


async def test_limit_counts_what_the_query_keeps(running: Running) -> None:
    hosts = '{"==": {"type": "host"}}'
    resp = await topology(running, query=hosts, limit=3)
    assert resp.status_code == 200 and len(resp.json()["vertices"]) == 3
    resp = await topology(running, query=hosts, limit=2)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["errors"][0]["field"] == "query" and "3 vertices match" in error["message"]


async def test_bad_queries_name_the_culprit(running: Running) -> None:
    cases = {
        "{not json": "query",
        '{"==": {"typ": "server"}}': "query.==.typ",
        '{"and": [{"==": {"type": "host"}}, {"like": {"name": "x"}}]}': "query.and[1].like",
        '{"<": {"name": 3}}': "query.<.name",
        '{"in": {"state": ["error", 1]}}': "query.in.state[1]",
    }
    for query, field in cases.items():
        for params in ({}, {"root": "host:compute1"}):
            resp = await topology(running, query=query, **params)
            assert resp.status_code == 400, (query, resp.text)
            [error] = resp.json()["error"]["errors"]
            assert error["field"] == field, (query, error)
    # The query is checked before the root: a bad one fails even for an unknown root.
    resp = await topology(running, query='{"==": {"typ": 1}}', root="host:nope")
    assert resp.status_code == 400


async def test_topology_added_through_the_api_outlives_a_restart(
    tmp_path: Path, db_url: str
) -> None:
    settings = settings_for(tmp_path, database_url=db_url)
    kept = {
        "entities": [{"type": "switch", "id": "tor-5", "state": "up"}],
        "relations": [{"source": "switch:tor-5", "target": "host:compute2", "label": "connects"}],
    }
    gone = {"entities": [{"type": "switch", "id": "tor-6", "state": "up"}]}
    async with serving(settings, lab_vim()) as r:
        for body in (kept, gone):
            assert (await r.client.post("/v1/topology", json=body, headers=ADMIN)).is_success
        resp = await r.client.delete("/v1/topology/switch:tor-6", headers=ADMIN)
        assert resp.status_code == 204

    async with serving(settings, lab_vim()) as again:
        graph = again.service.graph
        assert graph.get("switch:tor-5") is not None and graph.get("switch:tor-6") is None
        assert graph.has_edge("switch:tor-5", "host:compute2", "connects")
        # And the rules act on it as on anything else: the switch fails, its host is cut off.
        await again.client.put("/events", json=[resource_down("switch", "tor-5")])
        await again.service.bus.drain()
        await settled(again, ("switch", "tor-5"))
        alarms = (await again.client.get("/v1/alarms", headers=ADMIN)).json()["alarms"]
        assert ("host.uplink_down", "host:compute2") in {(a["name"], a["on"]) for a in alarms}


async def test_a_number_json_cannot_store_is_refused_and_nothing_is_added(
    running: Running,
) -> None:
    body = {"entities": [{"type": "switch", "id": "tor-huge", "props": {"ports": 10**30}}]}
    resp = await running.client.post("/v1/topology", json=body, headers=ADMIN)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]["errors"][0]
    assert error["field"] == "entities[0].props" and "64 bits" in error["problem"]
    assert running.service.graph.get("switch:tor-huge") is None
    body["entities"][0]["props"] = {"ports": 48, "nested": [2**63 - 1]}
    resp = await running.client.post("/v1/topology", json=body, headers=ADMIN)
    assert resp.status_code == 200, resp.text
