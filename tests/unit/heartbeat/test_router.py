"""Routing of server-group messages, over the real membership, topology and host streams:
one down message per host, refusals back to the sender, peer states from the hosts, the
VIM and the faults (never `failed` before the fence), and the `GuestLink` over it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opendoctor.core.model import Host, Server, ServerGroup
from opendoctor.core.ports import GuestLinkError
from opendoctor.heartbeat.membership import Membership
from opendoctor.heartbeat.route_streams import HostStreams
from opendoctor.heartbeat.routed_link import RoutedGuestLink
from opendoctor.heartbeat.router import Router
from opendoctor.inspector.topology import Topology
from tests.conftest import eventually

HOSTS = ["h1", "h2", "h3"]


class Net:
    """A router over three hosts, each with its stream; 12 VMs, vmN on h(N%3+1)."""

    def __init__(self, allowed: int = 1_000_000, queue: int = 1000) -> None:
        self.topology = Topology()
        servers = [Server(f"vm{i}", f"n{i}", f"h{i % 3 + 1}", "p") for i in range(12)]
        self.topology.load([Host(h, "127.0.0.1") for h in HOSTS], servers)
        self.membership = Membership(lambda sid: self.topology.servers.get(sid))
        self.membership.load(
            [
                ServerGroup("web", "web", "p", "", tuple(f"vm{i}" for i in range(10))),
                ServerGroup("db", "db", "p", "", ("vm0", "vm11")),
            ]
        )
        self.streams = HostStreams(queue)
        self.sent: dict[str, int] = {}

        def allow(vm: str) -> bool:
            self.sent[vm] = self.sent.get(vm, 0) + 1
            return self.sent[vm] <= allowed

        self.router = Router(
            self.membership, self.streams.deliver, self.topology.servers_on, allow_send=allow
        )
        self.topology.server_watchers.append(self.router.states.server_changed)
        self.topology.host_watchers.append(self.router.states.host_changed)
        self.router.states.seen_all(servers)
        self.open = {h: self.streams.open(h) for h in HOSTS}

    def read(self, host: str) -> list[dict[str, Any]]:
        stream = self.open[host]
        out = []
        while batch := stream._queue:
            out.append(batch.popleft())
        return out

    def read_all(self) -> dict[str, list[dict[str, Any]]]:
        return {h: self.read(h) for h in HOSTS}


def send(frm: str, group: str | None, msg_id: str = "m1", payload: str = "hi") -> dict[str, Any]:
    return {"type": "group-send", "from": frm, "group": group, "payload": payload, "msg_id": msg_id}


def test_a_group_send_is_one_message_per_host_naming_its_peers() -> None:
    net = Net()
    net.router.handle("h1", [send("vm0", "web")])
    got = net.read_all()
    assert [len(v) for v in got.values()] == [1, 1, 1]
    assert sorted(got["h1"][0]["to"]) == ["vm3", "vm6", "vm9"]  # not the sender
    assert sorted(got["h2"][0]["to"]) == ["vm1", "vm4", "vm7"]
    assert sorted(got["h3"][0]["to"]) == ["vm2", "vm5", "vm8"]
    assert got["h2"][0] == {
        "type": "group-message",
        "from": "vm0",
        "group": "web",
        "payload": "hi",
        "msg_id": "m1",
        "to": got["h2"][0]["to"],
    }


def test_no_group_means_every_group_of_the_sender() -> None:
    net = Net()
    net.router.handle("h1", [send("vm0", None)])
    got = net.read_all()
    assert {(m["group"], tuple(m["to"])) for m in got["h3"]} == {
        ("web", ("vm2", "vm5", "vm8")),
        ("db", ("vm11",)),
    }


def test_a_sender_outside_the_group_is_refused_and_counted() -> None:
    net = Net()
    net.router.handle("h2", [send("vm4", "db", msg_id="x")])
    got = net.read_all()
    assert got["h1"] == [] and got["h3"] == []
    assert got["h2"] == [
        {
            "type": "error",
            "to": ["vm4"],
            "ref": "x",
            "code": "not-member",
            "detail": "not a member of server group db",
        }
    ]
    assert net.router.counts["refused.not_member"] == 1
    net.router.handle("h3", [send("vm11", None)])  # in db only: fine
    net.router.handle("h2", [send("vm10", None)])  # vm10 is in no group
    assert net.read("h2")[-1]["code"] == "not-member"
    assert net.router.counts["refused.not_member"] == 2


def test_unknown_group_and_a_host_speaking_for_another_hosts_vm() -> None:
    net = Net()
    net.router.handle("h1", [send("vm0", "nope"), send("vm1", "web", msg_id="m2")])
    got = net.read("h1")
    assert [(m["code"], m["to"], m["ref"]) for m in got] == [
        ("unknown-group", ["vm0"], "m1"),
        ("unknown-instance", ["vm1"], "m2"),  # vm1 runs on h2
    ]
    assert net.read("h2") == [] and net.read("h3") == []


def test_the_send_rate_is_per_vm() -> None:
    net = Net(allowed=2)
    net.router.handle("h1", [send("vm0", "web", msg_id=str(i)) for i in range(3)])
    assert len(net.read("h2")) == 2
    assert net.read("h1")[-1]["code"] == "rate-limited"
    assert net.router.counts["refused.rate_limited"] == 1


def test_status_request_answers_from_the_service_view() -> None:
    net = Net()
    net.router.handle(
        "h2", [{"type": "instance-state", "instance_id": "vm1", "state": "stopped", "reason": None}]
    )
    net.read_all()
    net.router.handle(
        "h3", [{"type": "status-request", "from": "vm11", "request_id": "r", "group": None}]
    )
    (answer,) = net.read("h3")
    assert answer["type"] == "status-response" and answer["to"] == ["vm11"]
    assert answer["peers"] == [
        {"id": "vm0", "name": "n0", "group": "db", "state": "started", "host": "h1"}
    ]
    net.router.handle(
        "h1", [{"type": "status-request", "from": "vm0", "request_id": "r2", "group": "web"}]
    )
    peers = {p["id"]: p["state"] for p in net.read("h1")[0]["peers"]}
    assert len(peers) == 9 and peers["vm1"] == "stopped" and peers["vm2"] == "started"


def test_instance_states_reach_the_peers_once_and_only_from_their_host() -> None:
    net = Net()
    failed = {"type": "instance-state", "instance_id": "vm11", "state": "failed", "reason": "exit"}
    net.router.handle("h1", [failed])  # vm11 runs on h3: h1 does not speak for it
    assert net.read_all() == {h: [] for h in HOSTS}
    net.router.handle("h3", [failed, failed])
    got = net.read_all()
    assert got["h1"] == [
        {
            "type": "peer-state",
            "to": ["vm0"],
            "group": "db",
            "peer": "vm11",
            "peer_name": "n11",
            "state": "failed",
            "host": "h3",
            "reason": "exit",
        }
    ]
    assert got["h2"] == got["h3"] == []


def states(net: Net, host: str, peer: str) -> list[str]:
    return [m["state"] for m in net.read(host) if m["type"] == "peer-state" and m["peer"] == peer]


def test_a_host_fault_is_unreachable_until_the_fence_then_failed() -> None:
    net = Net()
    net.router.states.host_fault("h2")
    # vm1, vm4, vm7 (h2, group web): the peers on h1 hear they are unreachable.
    assert states(net, "h1", "vm1") == ["unreachable"]
    # The VIM marks them down (ERROR) before the fence: not a word of that.
    for sid in ("vm1", "vm4", "vm7"):
        server = net.topology.servers[sid]
        net.topology.put_server(Server(sid, server.name, "h2", "p", status="ERROR"))
    assert states(net, "h1", "vm1") == []
    assert net.router.states.state_of("vm4") == "unreachable"
    net.router.states.host_fenced("h2")
    assert states(net, "h1", "vm1") == ["failed"]
    # Evacuated: on h3 now, and running.
    net.topology.put_server(Server("vm1", "n1", "h3", "p", status="ACTIVE"))
    assert states(net, "h1", "vm1") == ["migrated", "started"]
    net.router.states.host_cleared("h2")
    assert states(net, "h1", "vm4") == []


def test_a_host_heard_again_before_its_fence_brings_its_vms_back() -> None:
    net = Net()
    net.router.states.host_fault("h3")
    assert states(net, "h1", "vm2") == ["unreachable"]
    net.router.states.host_cleared("h3")
    assert states(net, "h1", "vm2") == ["started"]
    assert net.router.states.state_of("vm2") == "started"


def test_vim_changes_of_servers() -> None:
    net = Net()
    net.topology.put_server(Server("vm1", "n1", "h2", "p", status="SHUTOFF"))
    assert states(net, "h1", "vm1") == ["stopped"]
    net.topology.put_server(Server("vm1", "n1", "h2", "p", status="ACTIVE"))
    assert states(net, "h1", "vm1") == ["started"]
    net.read_all()
    net.topology.put_server(Server("vm1", "n1", "h1", "p", status="ACTIVE"))
    (moved,) = [m for m in net.read("h3") if m["type"] == "peer-state"]
    assert (moved["state"], moved["host"], moved["reason"]) == ("migrated", "h1", "from h2")
    net.read_all()
    net.topology.remove_server("vm1")
    (gone,) = [m for m in net.read("h1") if m["type"] == "peer-state"]
    assert (gone["state"], gone["peer_name"], gone["reason"]) == ("stopped", "n1", "deleted")
    net.read_all()
    # A server in no group: nobody to tell.
    net.topology.put_server(Server("vm10", "n10", "h2", "p", status="SHUTOFF"))
    assert net.read_all() == {h: [] for h in HOSTS}


def test_a_full_stream_drops_and_counts() -> None:
    net = Net(queue=2)
    for i in range(4):
        net.router.handle("h1", [send("vm0", "web", msg_id=str(i))])
    assert len(net.read("h2")) == 2
    assert net.open["h2"].dropped == 2
    assert net.streams.counts["dropped"] == 6  # two too many for each of three hosts
    assert net.router.counts["down.lost"] == 6


def test_a_newer_stream_replaces_the_older() -> None:
    net = Net()
    old = net.open["h2"]
    new = net.streams.open("h2")
    assert old.closed and not new.closed
    net.streams.release(old)  # the old reader leaving does not take the new one
    net.router.handle("h1", [send("vm0", "web")])
    assert len(new._queue) == 1


def test_service_states_are_kept_per_server() -> None:
    net = Net()
    link = RoutedGuestLink(net.router)
    up = {
        "type": "service-state",
        "instance_id": "vm2",
        "services": [
            {"name": "db", "healthy": True, "reason": None},
            {"name": "web", "healthy": False, "reason": "exit 1"},
        ],
    }
    net.router.handle("h3", [up])
    got = link.services("vm2")
    assert set(got) == {"db", "web"}
    assert got["web"].healthy is False and got["web"].reason == "exit 1"
    since = got["db"].since
    net.router.handle("h1", [{**up, "instance_id": "vm2"}])  # not vm2's host: ignored
    assert net.router.counts["ignored.service_state"] == 1
    net.router.handle("h3", [{**up, "services": up["services"][:1]}])
    assert set(link.services("vm2")) == {"db"} and link.services("vm2")["db"].since == since
    assert link.services("vm5") == {}


async def test_restart_service_waits_for_the_agents_answer() -> None:
    net = Net()
    link = RoutedGuestLink(net.router)

    async def agent(ok: bool, reason: str | None) -> None:
        batch = await net.open["h3"].next_batch(5)
        (ask,) = batch
        assert ask["type"] == "restart-service" and ask["to"] == ["vm2"]
        assert ask["service"] == "web" and ask["timeout"] == 3
        result = {"type": "restart-result", "request_id": ask["request_id"]}
        net.router.handle("h3", [{**result, "ok": ok, "reason": reason}])

    answering = asyncio.create_task(agent(True, None))
    await link.restart_service("vm2", "web", 3)
    await answering
    answering = asyncio.create_task(agent(False, "exit 3"))
    with pytest.raises(GuestLinkError, match="exit 3"):
        await link.restart_service("vm2", "web", 3)
    await answering
    assert net.router.restarts == {}
    net.streams.release(net.open["h1"])
    with pytest.raises(GuestLinkError, match="not connected"):
        await link.restart_service("vm0", "web", 3)


async def test_announce_tells_the_peers_and_the_server_itself_a_role() -> None:
    net = Net()
    link = RoutedGuestLink(net.router)
    await link.announce("vm0", "active", "switch-over")
    await link.announce("vm0", "active", "again")  # said again: sent again
    got = [m for m in net.read("h3") if m["group"] == "db"]
    assert [(m["state"], m["reason"]) for m in got] == [
        ("active", "switch-over"),
        ("active", "again"),
    ]
    # The server made active hears it too (its host is h1), not only its peers.
    own = [m for m in net.read("h1") if m["group"] == "db"]
    assert [(m["to"], m["peer"], m["state"]) for m in own] == [(["vm0"], "vm0", "active")] * 2
    with pytest.raises(GuestLinkError):
        await link.announce("vm0", "")
    await eventually(lambda: net.router.states.state_of("vm0") == "active")


def test_hosts_the_vim_has_down_are_at_fault_until_up_again() -> None:
    net = Net()
    net.topology.put_host(Host("h2", "127.0.0.1", forced_down=True))
    assert states(net, "h1", "vm1") == ["unreachable"]
    net.topology.put_host(Host("h2", "127.0.0.1", state="down", forced_down=True))
    assert states(net, "h1", "vm1") == []  # still the same fault
    net.topology.put_host(Host("h2", "127.0.0.1"))
    assert states(net, "h1", "vm1") == ["started"]
    # A host down at start is at fault already: its fence fails its VMs.
    net.router.states.hosts_seen([Host("h3", "127.0.0.1", state="down")])
    assert net.router.states.state_of("vm2") == "unreachable"
    net.router.states.host_fenced("h3")
    assert states(net, "h1", "vm2") == ["failed"]
