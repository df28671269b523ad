"""The built-in host monitor: UDP heartbeats to every compute host, on one or two paths.

Every `interval` it sends one probe to each host's address from a single socket, and
one to its `alt_address` too if it has one (a second network, independent of the
first). When a host has left `misses` consecutive probes on its address unanswered:

* if its alt address still answers, the host lives but its link does not:
  `compute.host.unreachable` (status "down");
* if it has no alt address, or that is silent too: `compute.host.down`. An unreachable
  host whose alt address goes silent later is reported down then (both reports open).

The host's first answer on its address after that closes every open report (status
"up" for each). An alt address that goes silent while the address answers is only
logged and counted. T01 (detection) is stamped here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.infra import metrics
from opendoctor.wire import probe as wire

log = logging.getLogger(__name__)

MONITOR_NAME = "opendoctor-hostprobe"

Emit = Callable[[Event], Awaitable[None]]
Addr = tuple[str, int]


@dataclass(slots=True)
class _Path:
    addr: Addr
    last_answered: int  # newest probe answered here; a new path counts as "until now"


@dataclass(slots=True)
class _Target:
    name: str
    primary: _Path
    alt: _Path | None = None
    reported: list[str] = field(default_factory=list)  # event types reported down, not up
    alt_silent: bool = False  # logged once, until the alt path answers again


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, prober: HostProber) -> None:
        self.prober = prober

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        decoded = wire.decode_answer(data)
        if decoded is not None:
            self.prober.answered((str(addr[0]), int(addr[1])), decoded[0])


class HostProber:
    def __init__(self, settings: MonitorSettings, emit: Emit) -> None:
        self.settings = settings
        self.emit = emit
        # A random start: an answer can count only if it names a probe that was sent,
        # and nobody off the path can guess which were (a spoofed answer with a huge
        # number used to stand for every probe to come, hiding a host's death for good).
        self.first = secrets.randbits(62)
        self.seq = self.first
        self._targets: dict[str, _Target] = {}
        self._by_addr: dict[Addr, _Target] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def watch(self, host: Host) -> None:
        """Start (or keep) probing a host. A new or changed address (or alt address)
        counts as answering until now; reports already open stay open."""
        primary = (host.address, host.heartbeat_port)
        alt = (host.alt_address, host.heartbeat_port) if host.alt_address else None
        alt = None if alt == primary else alt  # the same path twice proves nothing
        target = self._targets.get(host.name)
        if target is None:
            target = self._targets[host.name] = _Target(host.name, _Path(primary, self.seq))
        elif target.primary.addr != primary:
            self._forget(target, target.primary)
            target.primary = _Path(primary, self.seq)
        if (target.alt.addr if target.alt is not None else None) != alt:
            self._forget(target, target.alt)
            target.alt = _Path(alt, self.seq) if alt is not None else None
            target.alt_silent = False
        for path in (target.primary, target.alt):  # both: swapped addresses stay mapped
            if path is not None:
                self._by_addr[path.addr] = target

    def _forget(self, target: _Target, path: _Path | None) -> None:
        if path is not None and self._by_addr.get(path.addr) is target:
            del self._by_addr[path.addr]

    def unwatch(self, name: str) -> None:
        target = self._targets.pop(name, None)
        if target is not None:
            self._forget(target, target.primary)
            self._forget(target, target.alt)

    def reported(self, name: str) -> list[str]:
        """The event types reported down for a host and not up again yet."""
        target = self._targets.get(name)
        return list(target.reported) if target is not None else []

    def assume_reported(self, name: str, kinds: list[str]) -> None:
        """Take over reports another monitor made (a new leader): the host is not reported
        again while it stays silent, and its coming back is reported."""
        target = self._targets.get(name)
        if target is not None:
            target.reported = [k for k in kinds if k in (HOST_UNREACHABLE, HOST_DOWN)]

    def is_down(self, name: str) -> bool:
        return HOST_DOWN in self.reported(name)

    @property
    def rounds(self) -> int:
        """Probe rounds sent so far."""
        return self.seq - self.first

    def answered(self, addr: Addr, seq: int) -> None:
        target = self._by_addr.get(addr)
        if target is None:
            return
        path = target.primary if addr == target.primary.addr else target.alt
        if path is None or seq <= path.last_answered or seq > self.seq:
            return
        path.last_answered = seq
        if path is target.primary:
            for kind in target.reported:
                self._report(target, kind, "up")
            target.reported.clear()
        elif target.alt_silent:
            target.alt_silent = False
            log.info("alt path answers again", extra={"host": target.name})

    def _report(self, target: _Target, kind: str, status: str, **details: Any) -> None:
        now = time.time()
        if status == "down":
            target.reported.append(kind)
        event = Event(
            type=kind,
            hostname=target.name,
            status=status,
            time=now,
            monitor=MONITOR_NAME,
            monitor_event_id=f"{target.name}-{kind.rsplit('.', 1)[-1]}-{self.seq}",
            details={"probes_missed": self.seq - target.primary.last_answered, **details},
            trace={"T01": now} if status != "up" else {},
        )
        log.info("%s %s", kind, status, extra={"host": target.name, "seq": self.seq})
        task = asyncio.ensure_future(self.emit(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _missed(self, path: _Path) -> int:
        # Probes sent so far that have gone unanswered, in a row. The newest had a whole
        # interval to come back, which is ages for a heartbeat on a LAN.
        missed = self.seq - path.last_answered
        if missed > 0:
            metrics.HOST_PROBES_MISSED.inc()
        return missed

    def _judge(self) -> None:
        misses = self.settings.misses
        for target in self._targets.values():
            primary, alt = target.primary, target.alt
            lost = self._missed(primary) >= misses
            alt_lost = alt is None or self._missed(alt) >= misses
            if not lost:
                if alt_lost and alt is not None and not target.alt_silent:
                    target.alt_silent = True
                    metrics.HOST_ALT_PATH_LOST.inc()
                    log.warning("alt path silent, address answers", extra={"host": target.name})
            elif alt_lost:
                if HOST_DOWN not in target.reported:
                    self._report(target, HOST_DOWN, "down")
            elif alt is not None and not target.reported and self._outlived(primary, alt):
                self._report(target, HOST_UNREACHABLE, "down", path="primary", alt_answering=True)

    @staticmethod
    def _outlived(primary: _Path, alt: _Path) -> bool:
        """The alt path answered a probe sent after the first one the address missed: the
        host lived on. (Answering just that first one proves nothing: a host that dies
        between its two answers does so. Its alt path will tell at the next tick.)"""
        return alt.last_answered > primary.last_answered + 1

    def _restart_count(self) -> None:
        """After a stall of our own loop: count every path from now (but the address of a
        host already reported, which only needs to answer)."""
        for target in self._targets.values():
            if not target.reported:
                target.primary.last_answered = self.seq
            if target.alt is not None:
                target.alt.last_answered = self.seq

    async def _run(self) -> None:
        assert self._transport is not None
        interval = self.settings.interval
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            now = loop.time()
            if now - next_tick > interval:
                # The loop itself stalled: answers may be waiting unread in the socket.
                # Judging now would blame the hosts for our own pause.
                self._restart_count()
                next_tick = now
            else:
                self._judge()
            self.seq += 1
            probe = wire.encode_probe(self.seq)
            for target in self._targets.values():
                for path in (target.primary, target.alt):
                    if path is not None:
                        self._send(target, probe, path.addr)
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    def _send(self, target: _Target, probe: bytes, addr: Addr) -> None:
        assert self._transport is not None
        try:
            self._transport.sendto(probe, addr)
        except OSError as exc:
            log.warning(
                "probe not sent", extra={"host": target.name, "to": addr[0], "error": str(exc)}
            )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("0.0.0.0", 0)
        )
        self._transport = transport
        self._task = asyncio.create_task(self._run(), name="host-prober")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        await asyncio.gather(*self._pending, return_exceptions=True)
