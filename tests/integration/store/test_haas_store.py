"""The HA store on SQLite and PostgreSQL: clusters with their nodes and parts come back
as written, a node is found by what it is, the history keeps the newest entries, and
deleting a cluster takes everything of it along."""

from __future__ import annotations

import pytest

from opendoctor.core import haas as records
from opendoctor.core.haas import (
    Cluster,
    FencingDevice,
    HistoryEntry,
    Node,
    Policy,
    Resource,
    Service,
)
from opendoctor.store.db import Database
from opendoctor.store.haas import HaasStore, Taken
from opendoctor.store.paging import UnknownMarker


@pytest.fixture
def store(db: Database) -> HaasStore:
    return HaasStore(db)


async def test_a_cluster_comes_back_whole(store: HaasStore) -> None:
    cluster = await store.add_cluster(Cluster("web", "p1", "application", "tier ü"))
    cid = cluster.id
    a = await store.add_node(Node(cid, "server", "vm-a", "active", 0))
    b = await store.add_node(Node(cid, "server", "vm-b", "standby", 1))
    parts = [
        Resource(cid, "vip", "ip", {"address": "10.0.0.9"}, a.id),
        Service(cid, "http", "nginx", (a.id, b.id)),
        FencingDevice(cid, a.id, "vim"),
        Policy(cid, "so", "switch-over", "node", (), (b.id,), 1, 2.5, 3),
        Policy(cid, "svc", "restart", "service", ("http",)),
    ]
    for part in parts:
        await store.add_part(part)
    view = await store.view(cid)
    assert view is not None
    assert view.cluster.description == "tier ü" and view.cluster.updated >= view.cluster.created
    assert [n.id for n in view.nodes] == [a.id, b.id]
    assert view.nodes[0] == a
    assert view.resources == [parts[0]] and view.services == [parts[1]]
    assert view.fencing == [parts[2]] and view.policies == parts[3:]
    assert isinstance(view.policies[0].domain, tuple)
    assert await store.nodes_of("server", "vm-b") == [b]
    assert await store.nodes_of("host", "vm-b") == []
    with pytest.raises(Taken):
        await store.add_node(Node(cid, "server", "vm-a"))


async def test_roles_states_and_held_resources_change(store: HaasStore) -> None:
    cid = (await store.add_cluster(Cluster("web", "p1"))).id
    a = await store.add_node(Node(cid, "server", "vm-a", "active"))
    b = await store.add_node(Node(cid, "server", "vm-b", "standby"))
    await store.add_part(Resource(cid, "vip", "ip", {}, a.id))
    await store.set_node(a.id, role="standby", state="failed")
    await store.move_resources(cid, a.id, b.id)
    await store.set_state(cid, "degraded")
    view = await store.view(cid)
    assert view is not None
    assert (view.nodes[0].role, view.nodes[0].state) == ("standby", "failed")
    assert view.resources[0].node_id == b.id and view.cluster.state == "degraded"


async def test_clusters_page_per_project(store: HaasStore) -> None:
    made = [await store.add_cluster(Cluster(f"c{i}", "p1" if i % 2 else "p2")) for i in range(5)]
    mine = [c.id for c in made if c.project_id == "p1"]
    assert [c.id for c in await store.clusters("p1", 10)] == mine
    assert [c.id for c in await store.clusters(None, 2, made[1].id)] == [made[2].id, made[3].id]
    assert await store.count_clusters("p2") == 3
    with pytest.raises(UnknownMarker):
        await store.clusters(None, 2, "nope")


async def test_the_history_keeps_the_newest(
    store: HaasStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("opendoctor.store.haas.HISTORY_KEPT", 3)
    cid = (await store.add_cluster(Cluster("web", "p1"))).id
    for i in range(5):
        await store.record(HistoryEntry(cid, f"step {i}", "ok", at=100.0 + i))
    kept = await store.history(cid, 10)
    assert [e.what for e in kept] == ["step 2", "step 3", "step 4"]
    assert [e.what for e in await store.history(cid, 2)] == ["step 3", "step 4"]
    assert [e.what for e in await store.history(cid, 10, since=103.0)] == ["step 4"]
    assert records.HISTORY_KEPT == 1000


async def test_deleting_a_cluster_takes_everything_of_it(store: HaasStore) -> None:
    keep = (await store.add_cluster(Cluster("keep", "p1"))).id
    await store.add_node(Node(keep, "server", "vm-k"))
    cid = (await store.add_cluster(Cluster("web", "p1"))).id
    node = await store.add_node(Node(cid, "server", "vm-a"))
    policy = await store.add_part(Policy(cid, "r", "restart"))
    await store.record(HistoryEntry(cid, "x", "ok"))
    assert not await store.delete_part(cid, "services", policy.id)  # not of that kind
    assert await store.delete_part(cid, "policies", policy.id)
    assert await store.delete_cluster(cid)
    assert await store.view(cid) is None and await store.history(cid, 10) == []
    assert await store.nodes_of("server", "vm-a") == []
    assert not await store.delete_node(cid, node.id)
    assert len(await store.nodes_of("server", "vm-k")) == 1
    assert not await store.delete_cluster(cid)


async def test_the_nodes_of_many_servers_at_once(store: HaasStore) -> None:
    cid = (await store.add_cluster(Cluster("web", "p1"))).id
    made = [await store.add_node(Node(cid, "server", f"vm-{i}")) for i in range(3)]
    refs = [f"vm-{i}" for i in range(1500)]  # more than one query's worth
    assert sorted(n.id for n in await store.nodes_of("server", *refs)) == sorted(n.id for n in made)
    assert await store.nodes_of("server") == []
