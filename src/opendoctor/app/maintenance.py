"""Planned maintenance in a process: what its sessions reach (the VIM and the service's
view of it, the owners' alarms, the hosts' BMCs, workflows, the inspector's marks), and
its start and stop."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opendoctor.core.ports import HostMaintainer, NotifyTarget, VimDriver
from opendoctor.core.settings import Settings
from opendoctor.infra.live import Publish, nowhere
from opendoctor.inspector.graph.feed import GraphFeed
from opendoctor.inspector.topology import Topology
from opendoctor.maintenance.engine import Engine
from opendoctor.maintenance.host_actions import NothingToDo
from opendoctor.maintenance.reach import Reach
from opendoctor.maintenance.service import Maintenance
from opendoctor.monitor.deadlines import CEILING_INTERVALS
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.power_cycle import PowerCycle
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.maintenance import MaintenanceStore

if TYPE_CHECKING:
    from opendoctor.store.fence_devices import FenceDeviceStore
    from opendoctor.workflow.service import Workflows

log = logging.getLogger(__name__)


def _settle(settings: Settings) -> float:
    """How long this process's monitor takes to notice a host that went off at worst
    (its misses, the longest deadline the last of them gets, a round to judge them, one
    more for the report to arrive)."""
    monitor = settings.monitor
    rounds = monitor.misses + 2 + CEILING_INTERVALS
    return monitor.interval * rounds if monitor.enabled else 0.0


class ByWorkflow:
    """The `workflow` host action: the workflow named in its metadata, given `host` (and
    the rest of the metadata), run to its end; anything but SUCCESS fails the host."""

    def __init__(self, workflows: Callable[[], Workflows | None]) -> None:
        self._workflows = workflows

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        workflows = self._workflows()
        if workflows is None:
            raise RuntimeError("workflows do not run in this process")
        name = str(metadata.get("workflow"))
        given = {k: v for k, v in metadata.items() if k != "workflow"}
        started = await workflows.start_for_service(
            name, {**given, "host": host}, f"maintenance of {host}"
        )
        ended = await workflows.engine.finished(started.id)
        if ended.state != "SUCCESS":
            raise RuntimeError(f"workflow {name} ended {ended.state}: {ended.state_info}")


class MaintenancePart:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        vim: Callable[[], VimDriver],
        topology: Topology,
        graph_feed: GraphFeed,
        notify: NotifyTarget,
        fence_devices: FenceDeviceStore,
        faulted_hosts: Callable[[], set[str]],
        workflows: Callable[[], Workflows | None],
        publish: Publish = nowhere,
    ) -> None:
        self.settings = settings
        self.store = MaintenanceStore(db)
        self._db = db
        self._topology = topology
        self._graph_feed = graph_feed
        self._fencing = Fencing(settings.recovery.fencing, registered=fence_devices.device)
        maintainers: dict[str, HostMaintainer] = {
            "power_cycle": PowerCycle(self._fencing),
            "dummy": NothingToDo(),
            "workflow": ByWorkflow(workflows),
        }
        api = settings.api
        base_url = settings.maintenance.public_url or f"http://{api.host}:{api.port}"
        self.reach = Reach(
            store=self.store,
            settings=settings.maintenance,
            vim=vim,
            # Not `topology.hosts` itself: a reload of the topology replaces the dict.
            hosts=lambda: self._topology.hosts,
            servers_on=topology.servers_on,
            notify=notify,
            maintainers=maintainers,
            mark=self.mark,
            faulted_hosts=faulted_hosts,
            base_url=base_url.rstrip("/"),
            heard=lambda host: host not in self._topology.maintenance_down,
            settle=_settle(settings),
            shared=db.engine.dialect.name != "sqlite",
            publish=publish,
        )
        shared = self.reach.shared
        holder = f"{socket.gethostname()}:{os.getpid()}"
        self.engine = Engine(self.reach, LeaseStore(db) if shared else None, holder)
        self.service: Maintenance | None = None
        if settings.maintenance.enabled:
            self.service = Maintenance(
                self.store,
                settings.maintenance,
                lambda: self._topology.hosts,
                lambda: self._topology.servers,
                self.engine,
            )

    def listening(self, url: str) -> None:
        """The API's address once bound: the base of the links notices carry, unless
        `maintenance.public_url` names the one owners reach (behind a proxy)."""
        if self.settings.maintenance.public_url is None:
            self.reach.base_url = url.rstrip("/")

    def mark(self, host: str, on: bool) -> None:
        if on:
            self._topology.maintenance.add(host)
        else:
            self._topology.maintenance.discard(host)
        self._graph_feed.set_maintenance(host, on)

    async def restore_marks(self) -> None:
        """Hosts a session had in maintenance before a restart are still: marked before
        the inspector handles the first event (their monitors may report them down)."""
        for session in await self.store.active():
            for name, progress in session.host_progress.items():
                if progress.state == "in_maintenance":
                    self.mark(name, True)

    async def start(self) -> None:
        if self.service is not None:
            await self.engine.start()

    async def stop(self) -> None:
        if self.engine.started:
            await self.engine.stop()
        await self._fencing.close()
