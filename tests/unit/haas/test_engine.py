"""The engine over the memory VIM, a real store and a guest link in memory: each policy
operation, retries and escalation, the node's and the cluster's states, the history,
and what the owner is told."""

from __future__ import annotations

import asyncio

from opendoctor.core.haas import FencingDevice, Policy, Resource, Service
from opendoctor.core.model import NotificationEvent, Server
from opendoctor.haas.journal import RECOVERY_EVENT, STATE_EVENT, SWITCHOVER_EVENT
from opendoctor.store.haas import HaasStore
from tests.unit.haas.support import Guests, World, add, fault, pair, unhealthy, world


def restart(priority: int = 0, retries: int = 0, timeout: float = 5.0) -> Policy:
    return Policy("c1", "restart", "restart", priority=priority, retries=retries, timeout=timeout)


async def with_http(store: HaasStore, *policies: Policy) -> tuple[World, Guests]:
    """The cluster of `pair` with `policies`, and its service http (nginx to the agent)."""
    guests = Guests()
    w = world(store, guests)
    await pair(store, *policies)
    await add(store, Service("c1", "http", "nginx"))
    return w, guests


async def outcomes(store: HaasStore) -> list[tuple[str | None, str]]:
    """(operation, outcome) of each entry but the cluster's state changes."""
    history = await store.history("c1", 100)
    return [(e.operation, e.outcome) for e in history if e.outcome != "changed"]


def recoveries(w: World) -> list[NotificationEvent]:
    return [e for e in w.told.events if e.event_type == RECOVERY_EVENT]


async def test_a_failed_node_is_restarted_and_the_owner_told(store: HaasStore) -> None:
    w = world(store)
    await pair(store, restart())
    f = fault("vm-a")
    assert await w.engine.server_failed(f, w.vim.servers["vm-a"])
    assert [c[0] for c in w.vim.calls] == ["stop", "start"]
    [item] = f.recovery
    assert (item.result, item.action, item.attempts, item.method) == (
        "ok",
        "restart",
        1,
        "haas:web",
    )
    view = await store.view("c1")
    assert view is not None and view.cluster.state == "ok"
    assert [n.state for n in view.nodes] == ["ok", "ok", "ok"]
    assert await outcomes(store) == [
        (None, "started"),
        ("restart", "started"),
        ("restart", "ok"),
    ]
    [told] = recoveries(w)
    traits = {k: t.value for k, t in told.traits.items()}
    assert (traits["instance_id"], traits["result"], traits["project_id"]) == ("vm-a", "ok", "p1")


async def test_a_server_of_no_cluster_is_left_to_the_default_recovery(store: HaasStore) -> None:
    w = world(store)
    await pair(store, restart())
    stranger = Server("vm-z", "vm-z", "compute2", "p1")
    assert not await w.engine.server_failed(fault("vm-z"), stranger)
    assert w.vim.calls == []


async def test_a_node_without_a_policy_for_it_is_left_to_the_default_recovery(
    store: HaasStore,
) -> None:
    w = world(store)
    await pair(store, Policy("c1", "so", "switch-over"))
    # vm-b is a standby: a switch-over from it hands nothing over.
    assert not await w.engine.server_failed(fault("vm-b"), w.vim.servers["vm-b"])
    [entry] = await store.history("c1", 10)
    assert entry.outcome == "skipped" and "not the active one" in entry.detail


async def test_retries_then_the_next_policy_then_ok(store: HaasStore) -> None:
    w = world(store)
    await pair(store, restart(retries=1), Policy("c1", "rebuild", "rebuild", priority=1))
    w.vim.fail = {"start"}
    f = fault("vm-a")
    await w.engine.server_failed(f, w.vim.servers["vm-a"])
    assert await outcomes(store) == [
        (None, "started"),
        ("restart", "started"),
        ("restart", "failed"),
        ("restart", "started"),
        ("restart", "failed"),
        ("rebuild", "started"),
        ("rebuild", "ok"),
    ]
    assert ("rebuild", "vm-a") in w.vim.calls
    assert (f.recovery[0].result, f.recovery[0].attempts) == ("ok", 3)
    results = [e.traits["result"].value for e in recoveries(w)]
    assert results == ["failed", "failed", "ok"]


async def test_when_every_policy_runs_out_the_cluster_is_degraded_or_failed(
    store: HaasStore,
) -> None:
    w = world(store)
    await pair(store, restart())
    w.vim.fail = {"start"}
    await w.engine.server_failed(fault("vm-b"), w.vim.servers["vm-b"])  # a standby
    view = await store.view("c1")
    assert view is not None
    assert (view.cluster.state, view.nodes[1].state) == ("degraded", "failed")
    assert (await outcomes(store))[-1] == (None, "escalated")
    changes = [e.what for e in await store.history("c1", 100) if e.outcome == "changed"]
    assert changes == ["cluster ok -> recovering", "cluster recovering -> degraded"]
    await w.engine.server_failed(fault("vm-a"), w.vim.servers["vm-a"])  # the active one
    view = await store.view("c1")
    assert view is not None and view.cluster.state == "failed"
    states = [e.traits["state"].value for e in w.told.events if e.event_type == STATE_EVENT]
    assert states == ["degraded", "failed"]
    f = fault("vm-c")
    await w.engine.server_failed(f, w.vim.servers["vm-c"])
    assert f.recovery[0].result == "failed" and "failed" in (f.recovery[0].error or "")


async def test_each_attempt_is_bounded_by_the_policy_timeout(store: HaasStore) -> None:
    w = world(store)
    await pair(store, restart(timeout=0.05))
    hang = asyncio.Event()

    async def never(server_id: str) -> None:
        await hang.wait()

    w.vim.start = never  # type: ignore[method-assign]
    await w.engine.server_failed(fault("vm-a"), w.vim.servers["vm-a"])
    failed = [e for e in await store.history("c1", 10) if e.outcome == "failed"]
    assert failed and "timeout (0.05s)" in failed[0].detail


async def test_switch_over_hands_the_role_and_what_it_held_then_repairs_the_node(
    store: HaasStore,
) -> None:
    guests = Guests()
    w = world(store, guests)
    await pair(store, Policy("c1", "so", "switch-over"), restart(priority=1))
    await add(
        store,
        Resource("c1", "vip", "ip", {"address": "10.0.0.9"}, node_id="a", id="r1"),
        FencingDevice("c1", "a", "vim"),
    )
    await w.engine.server_failed(fault("vm-a"), w.vim.servers["vm-a"])
    view = await store.view("c1")
    assert view is not None
    # b has the better priority of the two standbys (1 before 2).
    roles = {n.ref: (n.role, n.state) for n in view.nodes}
    assert roles == {
        "vm-a": ("standby", "ok"),
        "vm-b": ("active", "ok"),
        "vm-c": ("standby", "ok"),
    }
    assert view.resources[0].node_id == "b"
    assert guests.announced == [("vm-b", "active"), ("vm-a", "standby")]
    # Fenced through the VIM first (its fencing device), then repaired by the restart.
    assert [c[0] for c in w.vim.calls] == ["stop", "stop", "start"]
    [switch] = [e for e in w.told.events if e.event_type == SWITCHOVER_EVENT]
    traits = {k: t.value for k, t in switch.traits.items()}
    assert (traits["active"], traits["previous"], traits["instance_id"]) == ("vm-b", "vm-a", "vm-b")
    assert traits["resources"] == "vip" and traits["reason"].endswith("and holds vip")
    assert view.cluster.state == "ok"


async def test_a_failed_service_is_restarted_through_the_guest_agent(store: HaasStore) -> None:
    w, guests = await with_http(
        store,
        Policy("c1", "svc", "restart", applies_to="service", services=("http",), retries=1),
        Policy("c1", "node", "rebuild", priority=5),
    )
    guests.set("vm-a", "nginx", False)
    guests.failing_restarts = 1
    f = unhealthy("vm-a")
    assert await w.engine.server_failed(f, w.vim.servers["vm-a"])
    assert guests.restarts == [("vm-a", "nginx"), ("vm-a", "nginx")]
    assert guests.services("vm-a")["nginx"].healthy
    assert w.vim.calls == []  # the server itself untouched
    history = await store.history("c1", 20)
    assert history[0].what == "services failed: http"
    assert (await outcomes(store))[1:] == [
        ("restart", "started"),
        ("restart", "failed"),
        ("restart", "started"),
        ("restart", "ok"),
    ]


async def test_a_service_that_stays_unhealthy_escalates_to_the_node_policy(
    store: HaasStore,
) -> None:
    w, guests = await with_http(
        store,
        Policy("c1", "svc", "restart", applies_to="service", timeout=0.1),
        Policy("c1", "node", "rebuild", applies_to="service", priority=5),
    )
    guests.set("vm-a", "nginx", False)

    async def no_effect(server_id: str, service: str, timeout: float) -> None:
        guests.restarts.append((server_id, service))

    guests.restart_service = no_effect  # type: ignore[method-assign]
    await w.engine.server_failed(unhealthy("vm-a"), w.vim.servers["vm-a"])
    assert ("rebuild", "vm-a") in w.vim.calls
    failed = [e for e in await store.history("c1", 20) if e.outcome == "failed"]
    assert "timeout (0.1s)" in failed[0].detail


async def test_nodes_of_a_failed_host_are_fenced_once_and_moved_into_the_domain(
    store: HaasStore,
) -> None:
    w = world(store, fence_delay=0.02)
    evacuate = Policy("c1", "evac", "evacuate", domain=("compute3",))
    await pair(store, evacuate, roles=False)
    others = [Server("vm-z", "vm-z", "compute1", "p1")]
    w.vim.servers["vm-z"] = others[0]
    servers = [w.vim.servers[x] for x in ("vm-a", "vm-b", "vm-z")]
    f = fault("compute1", "compute.host.down")
    f.instance_id = None
    taken = await w.engine.take_hosted(f, servers)
    assert [t.node.ref for t in taken] == ["vm-a", "vm-b"]
    await w.engine.recover_hosted(taken, None)
    assert w.fenced == ["compute1"]
    assert {w.vim.servers[x].host for x in ("vm-a", "vm-b")} == {"compute3"}
    assert w.vim.servers["vm-z"].host == "compute1"  # host recovery's, not ours
    assert [t.item.result for t in taken if t.item] == ["ok", "ok"]


async def test_a_host_node_is_power_cycled_through_its_fencing_device(store: HaasStore) -> None:
    w = world(store)
    from opendoctor.core.haas import Cluster, Node

    await store.add_cluster(Cluster("ctl", "admin", "host", id="c1"))
    await store.add_node(Node("c1", "host", "compute2", id="h2"))
    await add(store, restart(), FencingDevice("c1", "h2", "bmc"))
    f = fault("compute2", "compute.host.down", "compute2")
    f.instance_id = None
    assert await w.engine.host_node_failed(f, "compute2")
    assert w.cycled == ["compute2"]
    assert not await w.engine.host_node_failed(f, "compute3")


async def test_a_service_reported_after_the_fault_is_still_the_one_restarted(
    store: HaasStore,
) -> None:
    w, guests = await with_http(
        store,
        Policy("c1", "svc", "restart", applies_to="service"),
        Policy("c1", "node", "rebuild", priority=5),
    )
    guests.set("vm-a", "nginx", True)  # the host link has not told of the failure yet

    async def reported_late() -> None:
        await asyncio.sleep(0.2)
        guests.set("vm-a", "nginx", False)

    late = asyncio.create_task(reported_late())
    await w.engine.server_failed(unhealthy("vm-a"), w.vim.servers["vm-a"])
    await late
    assert guests.restarts == [("vm-a", "nginx")] and w.vim.calls == []


async def test_a_switch_over_from_a_failed_host_waits_for_its_fence(store: HaasStore) -> None:
    w = world(store, fence_delay=0.05)
    await pair(store, Policy("c1", "so", "switch-over"))
    w.vim.servers["vm-b"].host = "compute2"
    f = fault("compute1", "compute.host.down")
    f.instance_id = None
    taken = await w.engine.take_hosted(f, [w.vim.servers["vm-a"]])
    await w.engine.recover_hosted(taken, None)
    assert w.fenced == ["compute1"]
    view = await store.view("c1")
    assert view is not None
    assert [(n.ref, n.role) for n in view.nodes[:2]] == [("vm-a", "standby"), ("vm-b", "active")]
    # Nothing repairs vm-a on a dead host: it stays failed, the cluster degraded.
    assert (view.nodes[0].state, view.cluster.state) == ("failed", "degraded")
