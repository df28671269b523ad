"""Server-group messaging in a process: the hosts' streams, the router and the groups it
routes by, the peer states and what feeds them (the topology's changes of servers and
hosts, the fences), the `GuestLink` the HA blocks use, and its start and stop.

It serves hosts in processes with the api role (their streams end there). Embedded,
everything is in the one process. Scaled out (the amqp bus), every change goes to every
process over a fanout exchange of the broker (`heartbeat.route_relay`), each process
with a queue of its own that lives as long as its connection; an inspector process
without the api role takes part too (its fences, and the `GuestLink` of the HA blocks
there). See docs/server-groups.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opendoctor.api.ratelimit import RateLimit
from opendoctor.core.errors import RequestError
from opendoctor.core.guestlink_settings import GuestLinkSettings
from opendoctor.core.model import Host
from opendoctor.core.ports import GuestLink, VimDriver
from opendoctor.core.settings import BusSettings
from opendoctor.heartbeat.membership import Membership, MembershipRefresh
from opendoctor.heartbeat.route_relay import Relay
from opendoctor.heartbeat.route_streams import HostStream, HostStreams
from opendoctor.heartbeat.routed_link import RoutedGuestLink
from opendoctor.heartbeat.router import Router
from opendoctor.infra.live import Hub
from opendoctor.inspector.topology import Topology
from opendoctor.recovery.fencing import Fencing

if TYPE_CHECKING:
    from opendoctor.infra.amqp import Broker, Delivery

log = logging.getLogger(__name__)


class GuestLinkPart:
    def __init__(
        self,
        settings: GuestLinkSettings,
        vim: Callable[[], VimDriver],
        topology: Topology,
        live: Hub,
        bus: BusSettings | None = None,
    ) -> None:
        """`bus`: scaled out, the broker every process relays through (None: embedded)."""
        self.settings = settings
        self._bus = bus
        self.relay: Relay | None = None
        self._broker: Broker | None = None
        self._topology = topology
        self._live = live
        self.streams = HostStreams(settings.stream_queue)
        # Not `topology.servers.get`: a reload of the topology replaces the dict.
        self.membership = Membership(lambda server_id: self._topology.servers.get(server_id))
        self._vm_rate = RateLimit(settings.vm_rate, settings.vm_burst)
        self.router = Router(
            self.membership,
            self.streams.deliver,
            topology.servers_on,
            allow_send=lambda vm: not self._vm_rate.take(vm, 1),
        )
        self.link: GuestLink = RoutedGuestLink(self.router, settings.restart_timeout_most)
        self.refresh = MembershipRefresh(self.membership, vim, settings.refresh_interval)
        self.speakers: dict[str, str] = {}  # host -> the monitor that speaks for it
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        topology.server_watchers.append(self._server_changed)
        topology.host_watchers.append(self._host_changed)

    # --- what feeds it ---------------------------------------------------------------------

    def _server_changed(self, server_id: str) -> None:
        try:
            if self.router.states.server_changed(server_id) and self.started:
                self.refresh.soon()  # a server came or went: it may be in a group
        except Exception:  # the topology's caller must not fail because of us
            log.exception("peer state not derived", extra={"server": server_id})

    def _host_changed(self, host: Host) -> None:
        try:
            self.router.states.host_changed(host)
        except Exception:
            log.exception("peer states of a host not derived", extra={"host": host.name})

    def watch_fencing(self, fencing: Fencing) -> None:
        """Hosts confirmed off by this process's fencing: their VMs are `failed`."""
        fencing.fenced.append(self._fenced)

    def _fenced(self, host: str) -> None:
        try:
            if self.relay is not None:
                self.relay.host_event("fenced", host)  # every process's peers hear it
            else:
                self.router.states.host_fenced(host)
        except Exception:
            log.exception("peer states of a fenced host not sent", extra={"host": host})

    async def _end_with_the_server(self) -> None:
        """The server stops by closing the live hub, then waits for every response to
        end: the hosts' streams end with it. (Not a subscription of the hub: a hub's
        subscribers are the dashboard's.)"""
        await self._live.wait_closed()
        self.streams.close()

    # --- what the API asks (api.hostlink.HostLink) -----------------------------------------

    def speaker(self, host: str, monitor: str) -> None:
        allowed = self.settings.monitors
        if "*" not in allowed and monitor not in allowed:
            names = ", ".join(allowed) or "none"
            problem = f"monitor {monitor!r} may not speak for hosts (guestlink.monitors: {names})"
            raise RequestError(403, problem, "X-Auth-Token")
        before = self.speakers.get(host)
        if before != monitor:
            self.speakers[host] = monitor
            if before is not None:
                # A token rotated, or a second one in use for the host: worth a look.
                log.warning(
                    "another monitor speaks for a host",
                    extra={"host": host, "before": before, "now": monitor},
                )

    def accept(self, host: str, messages: list[dict[str, Any]]) -> None:
        if self.relay is not None:
            self.relay.up(host, messages)  # routed when it comes back, as everywhere
        else:
            self.router.handle(host, messages)

    def open(self, host: str) -> HostStream:
        return self.streams.open(host)

    def release(self, stream: HostStream) -> None:
        self.streams.release(stream)

    def status(self) -> dict[str, Any]:
        return {
            "hosts": {
                host: {"monitor": monitor, "connected": self.streams.connected(host)}
                for host, monitor in sorted(self.speakers.items())
            },
            "groups": len(self.membership.groups),
            "group_reads": self.refresh.reads,
            "group_read_failures": self.refresh.failures,
            "streams": dict(self.streams.counts),
            "routing": dict(self.router.counts),
            "relay": None if self.relay is None else dict(self.relay.counts),
        }

    # --- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        if self._bus is not None:
            await self._start_relay(self._bus)
        self._spawn(self._end_with_the_server(), "guest link streams")
        self.router.states.seen_all(self._topology.servers.values())
        self.router.states.hosts_seen(self._topology.hosts.values())
        await self.refresh.read()  # a VIM that does not answer: the refresh tries again
        self._spawn(self.refresh.run(), "server groups")
        self.started = True

    async def _start_relay(self, bus: BusSettings) -> None:
        from opendoctor.infra.amqp import Broker  # the amqp extra, as the amqp bus needs

        broker = self._broker = Broker(bus.url, name="opendoctor-hostlink")
        exchange = f"{bus.prefix}.hostlink"
        # Not durable: what it carries is for the processes running now.
        await broker.declare_exchange(exchange, "fanout", durable=False)

        async def publish(body: bytes) -> None:
            await broker.publish(exchange, "", body)

        relay = self.relay = Relay(self.router, publish)
        self.router.send_down = relay.down
        self.router.announcer = relay.announce
        self._spawn(relay.run(), "guest link relay")

        async def received(delivery: Delivery) -> None:
            relay.received(delivery.body)
            await delivery.ack()

        queue = await broker.declare_queue(durable=False, exclusive=True, bind=[(exchange, "")])
        await broker.consume(queue, received, prefetch=64)

    def _spawn(self, work: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        self.started = False
        self.streams.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for waiting in self.router.restarts.values():
            waiting.cancel()
        if self._broker is not None:
            await self._broker.close()
