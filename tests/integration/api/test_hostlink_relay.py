"""Server-group messaging scaled out, through a real RabbitMQ: a host's posts reach one
process, its peers' streams are held by another, the host faults are known by a third
(the inspector's); every process keeps the same view and each down message leaves the
one process that holds the host's stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from opendoctor.app.guestlink import GuestLinkPart
from opendoctor.controller.memory import MemoryVim
from opendoctor.core.guestlink_settings import GuestLinkSettings
from opendoctor.core.model import Host, Server, ServerGroup
from opendoctor.core.recovery_settings import FencingSettings
from opendoctor.core.settings import BusSettings
from opendoctor.heartbeat.route_streams import HostStream
from opendoctor.infra.live import Hub
from opendoctor.inspector.topology import Topology
from opendoctor.recovery.fencing import Fencing
from tests.conftest import eventually
from tests.integration.amqp.conftest import amqp_url as amqp_url  # the broker's fixture

HOSTS = [Host(f"h{i}", "127.0.0.1") for i in (1, 2, 3)]
SERVERS = [Server(f"vm{i}", f"n{i}", f"h{i % 3 + 1}", "p") for i in range(6)]
GROUP = ServerGroup("g", "g", "p", "", tuple(s.id for s in SERVERS))


class Process:
    """One process's guest link over its own topology, hub and broker connection."""

    def __init__(self, vim: MemoryVim, bus: BusSettings) -> None:
        self.topology = Topology()
        self.topology.load(HOSTS, [Server(s.id, s.name, s.host, s.project_id) for s in SERVERS])
        self.live = Hub()
        self.part = GuestLinkPart(GuestLinkSettings(), lambda: vim, self.topology, self.live, bus)


@pytest.fixture
async def processes(amqp_url: str) -> AsyncIterator[list[Process]]:
    vim = MemoryVim(HOSTS, SERVERS)
    vim.groups = {GROUP.id: GROUP}
    bus = BusSettings(kind="amqp", url=amqp_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    procs = [Process(vim, bus) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for proc in procs:
            await proc.part.start()
            stack.push_async_callback(proc.part.stop)
            stack.callback(proc.live.close)
        yield procs


async def next_of(stream: HostStream, **fields: Any) -> dict[str, Any]:
    while True:
        batch = await stream.next_batch(5.0)
        assert batch, f"nothing came for {stream.host}"
        for message in batch:
            if all(message.get(k) == v for k, v in fields.items()):
                return message


def send(frm: str) -> dict[str, Any]:
    return {"type": "group-send", "from": frm, "group": "g", "payload": "hi", "msg_id": "m"}


async def test_a_post_to_one_process_reaches_streams_held_by_another(
    processes: list[Process],
) -> None:
    a, b, _ = (p.part for p in processes)
    h2, h3 = a.open("h2"), b.open("h3")
    a.accept("h1", [send("vm0")])  # vm0 runs on h1
    got = await next_of(h2, type="group-message")
    assert sorted(got["to"]) == ["vm1", "vm4"]
    assert sorted((await next_of(h3, type="group-message"))["to"]) == ["vm2", "vm5"]
    # Every process routed it (the same view), each delivered only what it holds.
    await eventually(lambda: all(p.part.router.counts["routed.group-send"] == 1 for p in processes))
    assert a.streams.counts["queued"] == 1 and b.streams.counts["queued"] == 1


async def test_a_fence_in_the_inspectors_process_and_a_restart_across(
    processes: list[Process],
) -> None:
    a, b, inspector = processes
    h1 = a.part.open("h1")
    fencing = Fencing(FencingSettings())
    inspector.part.watch_fencing(fencing)
    # Every process follows the VIM: the host marked down reaches each by itself.
    for proc in processes:
        proc.topology.put_host(Host("h2", "127.0.0.1", forced_down=True))
    got = await next_of(h1, type="peer-state", peer="vm1")
    assert (got["state"], got["to"]) == ("unreachable", ["vm0", "vm3"])
    assert b.part.router.states.state_of("vm4") == "unreachable"
    # Fenced where the inspector runs: every process's view, and the peers, hear it.
    for watch in fencing.fenced:
        watch("h2")
    got = await next_of(h1, type="peer-state", peer="vm1")
    assert got["state"] == "failed"
    await eventually(lambda: b.part.router.states.state_of("vm4") == "failed")
    # Unreachable and failed, for vm1 and vm4, each once: from the process holding h1.
    assert a.part.streams.counts["queued"] == 4

    # The HA blocks in one process restart a service in a VM whose host is on another.
    restarting = asyncio.create_task(b.part.link.restart_service("vm0", "db", 5))
    ask = await next_of(h1, type="restart-service")
    assert (ask["to"], ask["service"]) == (["vm0"], "db")
    result = {"type": "restart-result", "request_id": ask["request_id"], "ok": True}
    inspector.part.accept("h1", [{**result, "reason": None}])
    await asyncio.wait_for(restarting, 5)
