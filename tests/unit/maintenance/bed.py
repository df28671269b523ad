"""A maintenance engine over the memory VIM, with owners played by the test: every
notice lands in `notices` (as the owners' alarms would deliver it) and owners answer
through `Maintenance.project_reply`, as the API calls it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.maintenance_settings import MaintenanceSettings
from opendoctor.core.model import Host, NotificationEvent, Server
from opendoctor.core.notifications import Batch, OutboxEntry
from opendoctor.core.ports import HostMaintainer
from opendoctor.inspector.topology import Topology
from opendoctor.maintenance.engine import Engine
from opendoctor.maintenance.host_actions import NothingToDo
from opendoctor.maintenance.reach import Reach
from opendoctor.maintenance.service import Maintenance
from opendoctor.store.db import Database
from opendoctor.store.maintenance import MaintenanceStore


class Notices:
    """The owners' side of the notifier: what would reach each project's alarm."""

    def __init__(self) -> None:
        self.events: list[NotificationEvent] = []
        self.arrived = asyncio.Event()

    async def notify_many(self, batches: Sequence[Batch]) -> list[OutboxEntry]:
        for events, _ in batches:
            self.events.extend(events)
        self.arrived.set()
        return []

    async def landed(self, entries: Sequence[OutboxEntry]) -> None:
        return None

    def of(self, project: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        out = []
        for event in self.events:
            traits = {name: t.value for name, t in event.traits.items()}
            if project is not None and traits.get("project_id") != project:
                continue
            if state is not None and traits.get("state") != state:
                continue
            out.append({"event_type": event.event_type, **traits})
        return out


class Gate:
    """A host action that waits until the test lets it finish (a restart mid-way)."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.open = asyncio.Event()

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        self.entered.append(host)
        await self.open.wait()


@dataclass
class Cloud:
    vim: MemoryVim
    topology: Topology
    notices: Notices = field(default_factory=Notices)
    marks: list[tuple[str, bool]] = field(default_factory=list)
    faulted: set[str] = field(default_factory=set)
    follower: asyncio.Task[None] | None = None

    @classmethod
    def make(cls, hosts: int, servers: dict[str, list[str]], vcpus: int = 8) -> Cloud:
        """`servers`: host -> the projects of the servers on it (one server of 1 vCPU
        each); every host has `vcpus`."""
        hs = [Host(f"compute{i}", f"127.0.0.{i}", vcpus=vcpus) for i in range(1, hosts + 1)]
        ss = []
        for host, projects in servers.items():
            for n, project in enumerate(projects):
                ss.append(Server(f"{host}-vm{n}", f"{host}-vm{n}", host, project, vcpus=1))
        vim = MemoryVim(hs, ss)
        topology = Topology()
        topology.load([Host(**vars_of(h)) for h in hs], [Server(**vars_of(s)) for s in ss])
        cloud = cls(vim, topology)
        cloud.follower = asyncio.create_task(cloud._follow())
        return cloud

    async def _follow(self) -> None:
        async for change in self.vim.changes():
            self.topology.apply(change)

    def reach(
        self,
        store: MaintenanceStore,
        settings: MaintenanceSettings,
        maintainers: dict[str, HostMaintainer] | None = None,
    ) -> Reach:
        return Reach(
            store=store,
            settings=settings,
            vim=lambda: self.vim,
            hosts=lambda: self.topology.hosts,
            servers_on=self.topology.servers_on,
            notify=self.notices,
            maintainers=maintainers or {"dummy": NothingToDo()},
            mark=lambda host, on: self.marks.append((host, on)),
            faulted_hosts=lambda: set(self.faulted),
            base_url="http://127.0.0.1:8780",
        )

    async def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def settings(**overrides: Any) -> MaintenanceSettings:
    base: dict[str, Any] = {
        "reply_timeout": 30.0,
        "complete_wait": 0.5,
        "default_host_action": "dummy",
        "step_interval": 0.02,
    }
    return MaintenanceSettings(**(base | overrides))


@dataclass
class Running:
    cloud: Cloud
    store: MaintenanceStore
    engine: Engine
    service: Maintenance


async def start(
    cloud: Cloud,
    db: Database,
    config: MaintenanceSettings,
    maintainers: dict[str, HostMaintainer] | None = None,
) -> Running:
    store = MaintenanceStore(db)
    engine = Engine(cloud.reach(store, config, maintainers), None, "test")
    service = Maintenance(
        store, config, lambda: cloud.topology.hosts, lambda: cloud.topology.servers, engine
    )
    await engine.start()
    return Running(cloud, store, engine, service)


def decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
