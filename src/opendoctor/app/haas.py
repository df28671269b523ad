"""HA as a service in a process: the engine (`haas.engine`) between the inspector and its
default recovery, and what the engine acts through (the VIM, the hosts' fencing, the
servers' endpoints, the guest agents, the owners' alarms).

`wrap` takes the recovery the inspector would run (built-in, or by workflow) and gives
back one that hands failures of cluster nodes to the engine and everything else, as
before, to that recovery. On a host failure the cluster nodes the engine takes are left
out of what host recovery evacuates (a server is moved by one of the two, never both);
see `haas.engine` for who does what.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from opendoctor.core.faults import Fault
from opendoctor.core.model import HOST_UNREACHABLE, Server
from opendoctor.core.ports import GuestLink, NotifyTarget, VimDriver
from opendoctor.core.settings import Settings
from opendoctor.haas.engine import HaEngine
from opendoctor.haas.operations import Reach
from opendoctor.infra.httpclient import HttpClient
from opendoctor.inspector.inspector import Recover, RecoverServer
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.guard import FenceGuard
from opendoctor.recovery.power_cycle import PowerCycle
from opendoctor.recovery.serving import wait_serving
from opendoctor.store.haas import HaasStore

log = logging.getLogger(__name__)


class HaasPart:
    def __init__(
        self,
        settings: Settings,
        store: HaasStore,
        vim: VimDriver,
        http: HttpClient,
        notify: NotifyTarget,
        fencing: Fencing | None,
        guestlink: Callable[[], GuestLink | None],
        on_moved: Callable[[Server], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._guard = FenceGuard(settings.recovery.fencing, fencing, notify)
        self._http = http
        self.engine = HaEngine(
            Reach(
                vim=vim,
                store=self.store,
                serving=self._serving,
                notify=notify,
                guestlink=guestlink,
                fence_host=self._fence_host if fencing is not None else None,
                power_cycle=self._power_cycle(fencing),
                on_moved=on_moved,
            )
        )

    async def _serving(self, url: str, timeout: float) -> None:
        await wait_serving(self._http, url, timeout)

    async def _fence_host(self, fault: Fault, host: str) -> float:
        """As host recovery fences: confirmed off, or evacuated unfenced where the policy
        allows it for a host without a device."""
        if not await self._guard.needed(host):
            log.warning("HA evacuation without fencing: no fence device", extra={"host": host})
            return time.time()
        return await self._guard.fence(fault, host)

    @staticmethod
    def _power_cycle(fencing: Fencing | None) -> Callable[[str], Awaitable[None]] | None:
        if fencing is None:
            return None
        cycle = PowerCycle(fencing)
        return lambda host: cycle.maintain(host, {})

    def wrap(
        self, host: Recover | None, server: RecoverServer | None
    ) -> tuple[Recover | None, RecoverServer | None]:
        """The inspector's recovery with cluster nodes taken out to the engine; as given
        where recovery is off (`recovery.enabled`)."""
        if not self.settings.recovery.enabled:
            return host, server
        engine = self.engine
        cut_link = self.settings.recovery.cut_link

        async def recover_server(fault: Fault, failed: Server) -> None:
            try:
                mine = await engine.server_failed(fault, failed)
            except Exception as exc:  # the clusters unreadable: recovered as any server
                log.error("HA clusters not read", extra={"server": failed.id}, exc_info=exc)
                mine = False
            if not mine and server is not None:
                await server(fault, failed)

        async def recover(fault: Fault, servers: list[Server], settled: Awaitable[None]) -> None:
            shared = asyncio.ensure_future(settled)  # awaited by both recoveries
            if fault.type == HOST_UNREACHABLE and cut_link != "fence-and-evacuate":
                # A cut link's servers still run: left where they are, nodes included.
                if host is not None:
                    await host(fault, servers, shared)
                return
            try:
                taken = await engine.take_hosted(fault, servers)
            except Exception as exc:
                log.error("HA clusters not read", extra={"host": fault.hostname}, exc_info=exc)
                taken = []
            items = [t.item for t in taken if t.item is not None]
            ours = {i.server_id for i in items}
            rest = [s for s in servers if s.id not in ours]

            async def by_default() -> None:
                if host is not None and rest:
                    await host(fault, rest, shared)

            await asyncio.gather(by_default(), engine.recover_hosted(taken, shared))
            # Host recovery writes the fault's items whole: the engine's go in after.
            fault.recovery = [*fault.recovery, *items]
            if fault.instance_id is None:
                try:
                    await engine.host_node_failed(fault, fault.hostname)
                except Exception as exc:
                    log.error(
                        "HA host node not recovered", extra={"host": fault.hostname}, exc_info=exc
                    )

        return recover, recover_server
