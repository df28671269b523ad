"""Who probes: the host prober of a process while it should probe, always or as leader.

Embedded, the one monitor probes from the start. Replicas (`monitor.lease`) elect one
through a lease in the database; the others wait, and one of them takes over within
about `monitor.lease_ttl` seconds when the leader dies. A new leader takes over what
the old one had reported (the hosts with an open fault), so a host that came back
during the hand-over is reported up, and one still dead is not reported twice.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from opendoctor.core.model import Event, Host
from opendoctor.core.settings import Settings
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.monitor.leader import Leadership
from opendoctor.store.leases import LeaseStore
from opendoctor.store.pipeline import FaultStore

log = logging.getLogger(__name__)

Emit = Callable[[Event], Awaitable[None]]
# host name -> event types reported down and not up yet (from the open faults)
Reported = Callable[[], Awaitable[dict[str, list[str]]]]


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Probing:
    def __init__(self, settings: Settings, emit: Emit, reported: Reported | None = None) -> None:
        self.settings = settings
        self.emit = emit
        self.reported = reported
        self.hosts: dict[str, Host] = {}
        self.prober: HostProber | None = None
        self.leadership: Leadership | None = None

    def watch(self, host: Host) -> None:
        self.hosts[host.name] = host
        if self.prober is not None:
            self.prober.watch(host)

    def unwatch(self, name: str) -> None:
        self.hosts.pop(name, None)
        if self.prober is not None:
            self.prober.unwatch(name)

    async def start(self, leases: LeaseStore | None) -> None:
        """Probe now, or (with a lease store and `monitor.lease` set) once elected."""
        lease = self.settings.monitor.lease
        if lease is None or leases is None:
            await self.lead(True)
            return
        holder = holder_id()
        self.leadership = Leadership(
            leases, f"monitor:{lease}", holder, self.settings.monitor.lease_ttl, self.lead
        )
        self.leadership.start()
        log.info("monitor replica waiting to lead", extra={"holder": holder, "lease": lease})

    async def lead(self, leading: bool) -> None:
        if leading and self.prober is None:
            # A fresh prober: every host counts as answering from now, so a new leader
            # does not blame the hosts for the time nobody probed them.
            prober = HostProber(self.settings.monitor, self.emit)
            for host in self.hosts.values():
                prober.watch(host)
            if self.reported is not None:
                try:
                    for name, kinds in (await self.reported()).items():
                        prober.assume_reported(name, kinds)
                except Exception as exc:  # the database: the hosts are judged afresh
                    log.warning("open faults not read", extra={"error": str(exc)})
            self.prober = prober
            await prober.start()
        elif not leading and self.prober is not None:
            prober, self.prober = self.prober, None
            await prober.stop()

    async def stop(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()  # a clean stop hands over at once
        await self.lead(False)


async def open_reports(faults: FaultStore) -> dict[str, list[str]]:
    """What the monitors reported down and is still open, by host."""
    out: dict[str, list[str]] = {}
    for fault in await faults.list(status="active", limit=100_000):
        if fault.instance_id is None:
            out.setdefault(fault.hostname, []).extend(fault.signals)
    return out
