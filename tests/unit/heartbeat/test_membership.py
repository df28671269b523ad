"""Server groups as routing sees them: who is in which group, where each member runs, and
the re-reads from the VIM."""

from __future__ import annotations

import asyncio

import pytest

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server, ServerGroup
from opendoctor.heartbeat.membership import Membership, MembershipRefresh, Peer
from opendoctor.inspector.topology import Topology
from tests.conftest import eventually

SERVERS = [Server(f"vm{i}", f"name{i}", f"h{i % 2}", "p") for i in range(5)]
GROUPS = [
    ServerGroup("g1", "web", "p", "anti-affinity", ("vm0", "vm1", "vm2")),
    ServerGroup("g2", "db", "p", "", ("vm2", "vm3", "gone")),
]


def membership() -> tuple[Membership, Topology]:
    topology = Topology()
    topology.load([Host("h0", "127.0.0.1"), Host("h1", "127.0.0.2")], SERVERS)
    m = Membership(lambda sid: topology.servers.get(sid))
    m.load(GROUPS)
    return m, topology


def test_groups_by_member() -> None:
    m, _ = membership()
    assert m.groups_of("vm2") == ("g1", "g2")
    assert m.groups_of("vm4") == ()
    assert m.is_member("vm0", "g1")
    assert not m.is_member("vm0", "g2")
    assert m.knows("gone") and not m.knows("vm4")


def test_peers_leave_out_the_sender_and_name_their_host() -> None:
    m, _ = membership()
    assert m.peers("vm0", "g1") == [Peer("vm1", "name1", "h1"), Peer("vm2", "name2", "h0")]
    # A member the topology does not know has no host: nowhere to send.
    assert m.peers("vm2", "g2")[-1] == Peer("gone", "", None)
    assert m.by_host(m.peers("vm2", "g2")) == {"h1": ["vm3"]}
    assert m.peers("vm0", "nope") == []


def test_hosts_follow_the_topology() -> None:
    m, topology = membership()
    topology.put_server(Server("vm1", "name1", "h0", "p"))
    assert m.by_host(m.peers("vm0", "g1")) == {"h0": ["vm1", "vm2"]}


def test_a_reload_replaces_every_group() -> None:
    m, _ = membership()
    m.load([ServerGroup("g3", "x", "p", "", ("vm4", "vm4", "vm0"))])
    assert m.group("g1") is None
    assert m.groups_of("vm0") == ("g3",)
    assert m.peers("vm0", "g3") == [Peer("vm4", "name4", "h0")]  # a repeated member once


async def test_refresh_reads_the_vim_and_keeps_the_last_groups_when_it_fails() -> None:
    vim = MemoryVim([], [])
    vim.groups = {g.id: g for g in GROUPS}
    m, _ = membership()
    m.load([])
    loaded: list[int] = []
    refresh = MembershipRefresh(m, lambda: vim, 3600, on_loaded=lambda: loaded.append(1))
    assert await refresh.read()
    assert m.groups_of("vm2") == ("g1", "g2") and loaded == [1]
    vim.fail.add("server_groups")
    assert not await refresh.read()
    assert m.groups_of("vm2") == ("g1", "g2")
    assert refresh.failures == 1


async def test_refresh_rereads_when_asked() -> None:
    vim = MemoryVim([], [])
    m, _ = membership()
    refresh = MembershipRefresh(m, lambda: vim, 3600)
    task = asyncio.create_task(refresh.run())
    try:
        vim.groups = {"g9": ServerGroup("g9", "new", "p", "", ("vm0", "vm4"))}
        refresh.soon()
        await eventually(lambda: m.groups_of("vm0") == ("g9",))
        assert refresh.reads == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
