"""The built-in host monitor: UDP heartbeats to every compute host.

Every `interval` it sends one probe to each host from a single socket. A host that has
left `misses` consecutive probes unanswered is reported down (`compute.host.down`);
its first answer after that reports it up again. T01 (detection) is stamped here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opendoctor import metrics
from opendoctor.config import MonitorSettings
from opendoctor.model import HOST_DOWN, Event, Host
from opendoctor.monitor import hostwire

log = logging.getLogger(__name__)

MONITOR_NAME = "opendoctor-hostprobe"

Emit = Callable[[Event], Awaitable[None]]


@dataclass(slots=True)
class _Target:
    name: str
    addr: tuple[str, int]
    last_answered: int
    down: bool = False


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, prober: HostProber) -> None:
        self.prober = prober

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        decoded = hostwire.decode_answer(data)
        if decoded is not None:
            self.prober.answered((str(addr[0]), int(addr[1])), decoded[0])


class HostProber:
    def __init__(self, settings: MonitorSettings, emit: Emit) -> None:
        self.settings = settings
        self.emit = emit
        self.seq = 0
        self._targets: dict[str, _Target] = {}
        self._by_addr: dict[tuple[str, int], _Target] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def watch(self, host: Host) -> None:
        """Start (or keep) probing a host; a new host counts as answering until now."""
        addr = (host.address, host.heartbeat_port)
        target = self._targets.get(host.name)
        if target is not None and target.addr == addr:
            return
        if target is not None:
            self._by_addr.pop(target.addr, None)
        target = _Target(host.name, addr, last_answered=self.seq)
        self._targets[host.name] = target
        self._by_addr[addr] = target

    def unwatch(self, name: str) -> None:
        target = self._targets.pop(name, None)
        if target is not None:
            self._by_addr.pop(target.addr, None)

    def is_down(self, name: str) -> bool:
        target = self._targets.get(name)
        return bool(target and target.down)

    def answered(self, addr: tuple[str, int], seq: int) -> None:
        target = self._by_addr.get(addr)
        if target is None or seq <= target.last_answered:
            return
        target.last_answered = seq
        if target.down:
            target.down = False
            self._report(target, "up")

    def _report(self, target: _Target, status: str) -> None:
        now = time.time()
        event = Event(
            type=HOST_DOWN,
            hostname=target.name,
            status=status,
            time=now,
            monitor=MONITOR_NAME,
            monitor_event_id=f"{target.name}-{self.seq}",
            details={"probes_missed": self.seq - target.last_answered},
            trace={"T01": now} if status != "up" else {},
        )
        log.info("host %s", status, extra={"host": target.name, "seq": self.seq})
        task = asyncio.ensure_future(self.emit(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _judge(self) -> None:
        for target in self._targets.values():
            # Probes sent so far that have gone unanswered, in a row. The newest had a
            # whole interval to come back, which is ages for a heartbeat on a LAN.
            missed = self.seq - target.last_answered
            if missed > 0:
                metrics.HOST_PROBES_MISSED.inc()
            if missed >= self.settings.misses and not target.down:
                target.down = True
                self._report(target, "down")

    async def _run(self) -> None:
        assert self._transport is not None
        interval = self.settings.interval
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            now = loop.time()
            late = now - next_tick
            if late > interval:
                # The loop itself stalled: answers may be waiting unread in the socket.
                # Judging now would blame the hosts for our own pause, so restart the count.
                for target in self._targets.values():
                    if not target.down:
                        target.last_answered = self.seq
                next_tick = now
            else:
                self._judge()
            self.seq += 1
            probe = hostwire.encode_probe(self.seq)
            for target in self._targets.values():
                try:
                    self._transport.sendto(probe, target.addr)
                except OSError as exc:
                    log.warning("probe not sent", extra={"host": target.name, "error": str(exc)})
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

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
