"""What the HA unit tests build on: a store on a real SQLite file, the memory VIM, a
guest link in memory behind the `GuestLink` protocol, and a cluster to fail."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.faults import Fault
from opendoctor.core.haas import Cluster, Node, Part, Policy
from opendoctor.core.model import HEARTBEAT_UNHEALTHY, PROCESS_EXITED, Host, Server, ServiceHealth
from opendoctor.core.ports import GuestLinkError
from opendoctor.haas.engine import HaEngine
from opendoctor.haas.operations import Reach
from opendoctor.store.haas import HaasStore
from tests.unit.recovery.support import Told


class Guests:
    """The guest agents as the service reaches them: each server's services' health, a
    restart that makes a service healthy (unless told to fail), announcements kept."""

    def __init__(self) -> None:
        self.health: dict[str, dict[str, ServiceHealth]] = {}
        self.restarts: list[tuple[str, str]] = []
        self.announced: list[tuple[str, str]] = []
        self.failing_restarts = 0

    def set(self, server_id: str, service: str, healthy: bool) -> None:
        self.health.setdefault(server_id, {})[service] = ServiceHealth(service, healthy)

    def services(self, server_id: str) -> Mapping[str, ServiceHealth]:
        return dict(self.health.get(server_id, {}))

    async def restart_service(self, server_id: str, service: str, timeout: float) -> None:
        self.restarts.append((server_id, service))
        if self.failing_restarts:
            self.failing_restarts -= 1
            raise GuestLinkError(f"{service}: the restart command exited 1")
        self.set(server_id, service, True)

    async def announce(self, server_id: str, state: str, reason: str | None = None) -> None:
        self.announced.append((server_id, state))


@dataclass
class World:
    vim: MemoryVim
    store: HaasStore
    engine: HaEngine
    told: Told
    guests: Guests
    fenced: list[str] = field(default_factory=list)
    cycled: list[str] = field(default_factory=list)


def vim() -> MemoryVim:
    hosts = [Host(f"compute{i}", f"127.0.1.{i}") for i in (1, 2, 3)]
    servers = [Server(f"vm-{x}", f"vm-{x}", "compute1", "p1") for x in "abc"]
    return MemoryVim(hosts, servers)


def world(store: HaasStore, guests: Guests | None = None, fence_delay: float = 0.0) -> World:
    told, guests = Told(), guests or Guests()
    w = World(vim(), store, None, told, guests)  # type: ignore[arg-type]

    async def fence(fault: Fault, host: str) -> float:
        w.fenced.append(host)
        await asyncio.sleep(fence_delay)
        await w.vim.force_down(host, True)
        return 0.0

    async def cycle(host: str) -> None:
        w.cycled.append(host)

    async def serving(url: str, timeout: float) -> None:
        return None

    reach = Reach(
        vim=w.vim,
        store=store,
        serving=serving,
        notify=told,
        guestlink=lambda: guests,
        fence_host=fence,
        power_cycle=cycle,
    )
    w.engine = HaEngine(reach)
    return w


async def pair(store: HaasStore, *policies: Policy, roles: bool = True) -> Cluster:
    """Cluster `web` of vm-a (active) and vm-b, vm-c (standbys), with `policies`."""
    cluster = await store.add_cluster(Cluster("web", "p1", "application", id="c1"))
    for i, x in enumerate("abc"):
        role = ("active" if x == "a" else "standby") if roles else "none"
        await store.add_node(Node("c1", "server", f"vm-{x}", role, i, id=x))  # type: ignore[arg-type]
    for part in policies:
        await store.add_part(part)
    return cluster


async def add(store: HaasStore, *parts: Part) -> None:
    for part in parts:
        await store.add_part(part)


def fault(server: str, type_: str = PROCESS_EXITED, host: str = "compute1") -> Fault:
    signals = [type_]
    return Fault(f"f-{server}-{type_}", type_, host, 0.0, instance_id=server, signals=signals)


def unhealthy(server: str) -> Fault:
    return fault(server, HEARTBEAT_UNHEALTHY)
