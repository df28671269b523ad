"""The built-in host monitor: UDP heartbeats to every compute host, on one or two paths.

Every `interval` it sends one probe to each host's address from a single socket, and
one to its `alt_address` too if it has one (a second network, independent of the
first). A probe counts as missed once its answer is overdue by the path's own deadline
(learnt from the path's answer times, see `deadlines`), judged at each round and again
as soon as the newest round's deadline passes.

* A host whose address and alt address have both left `misses` consecutive probes
  unanswered: `compute.host.down`.
* A host whose address has left `2 * misses` unanswered while its alt address still
  answers lives, but its link does not: `compute.host.unreachable` (status "down"). An
  unreachable host whose alt address goes silent later is reported down then (both
  reports open).
* A host with no alt address: `compute.host.down` after `2 * misses` on its address.

The host's first answer on its address after that closes every open report (status
"up" for each). An alt address that goes silent while the address answers is only
logged and counted. Every verdict waits for `2 * misses` missed probes in all, on one
path or on two: with independent loss `p`, a live host is taken for dead (or cut off)
with probability about `p ** (2 * misses)` per round (1e-12 at 1 % and three misses),
where `misses` on one path would give `p ** misses`. The second path makes the
verdict on a dead host fast: both paths count at once. T01 (detection) is stamped here.

Answers are read from the socket in batches, and the socket is read out before every
judgement: a round judged late because our own event loop was busy finds every answer
that came meanwhile, and only probes actually sent can be missed. Our own lateness never
counts against a host: a judgement's time is read from the clock before the socket is
read out (an answer in by then counts, however late we read it: our process may be
descheduled in between), and a round's time once all its probes are out (not before:
a probe sent late, the process descheduled halfway through a round, would look
answered late).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.infra import metrics
from opendoctor.monitor.deadlines import AnswerTimes, Clamp, Rounds
from opendoctor.wire import probe as wire

log = logging.getLogger(__name__)

MONITOR_NAME = "opendoctor-hostprobe"

Emit = Callable[[Event], Awaitable[None]]
Clock = Callable[[], float]
Addr = tuple[str, int]

# Answers read per wake-up at most: a flood cannot keep the prober in its read loop.
_READ_BATCH = 4096
# A judgement due at a deadline waits this much longer: timers may fire a hair early.
_SLACK = 0.001
# Room for a round of answers from many hosts while the event loop is busy elsewhere
# (the kernel caps it at net.core.rmem_max).
_RECV_BUFFER = 1 << 20


@dataclass(slots=True)
class _Path:
    addr: Addr
    last_answered: int  # newest probe answered here; a new path counts as "until now"
    times: AnswerTimes = field(default_factory=AnswerTimes)
    counted: int = 0  # newest probe counted in the missed-probes metric


@dataclass(slots=True)
class _Target:
    name: str
    primary: _Path
    alt: _Path | None = None
    reported: list[str] = field(default_factory=list)  # event types reported down, not up
    alt_silent: bool = False  # logged once, until the alt path answers again


class HostProber:
    def __init__(
        self, settings: MonitorSettings, emit: Emit, clock: Clock = time.monotonic
    ) -> None:
        """`clock`: seconds, never going back; every time the prober keeps is on it."""
        self.settings = settings
        self.emit = emit
        self._clock = clock
        # A random start: an answer can count only if it names a probe that was sent,
        # and nobody off the path can guess which were (a spoofed answer with a huge
        # number used to stand for every probe to come, hiding a host's death for good).
        self.first = secrets.randbits(62)
        self.seq = self.first
        self._clamp = Clamp.for_interval(settings.interval)
        # Enough rounds to look a deadline's ceiling back past a whole verdict.
        keep = 64 + settings.misses + math.ceil(self._clamp.ceiling / settings.interval)
        self._rounds = Rounds(self.first, keep)
        # The shortest deadline of any path at the last judgement: when to judge again.
        self._soonest = self._clamp.ceiling
        self._targets: dict[str, _Target] = {}
        self._by_addr: dict[Addr, _Target] = {}
        self._sock: socket.socket | None = None
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

    def deadline(self, name: str, alt: bool = False) -> float | None:
        """How long a probe to a host's address (or alt address) may now go unanswered."""
        target = self._targets.get(name)
        path = None if target is None else target.alt if alt else target.primary
        return None if path is None else path.times.deadline(self._clamp)

    def answered(self, addr: Addr, seq: int, at: float | None = None) -> None:
        """An answer to probe `seq` from `addr`, read at `at` (default: now)."""
        target = self._by_addr.get(addr)
        if target is None:
            return
        path = target.primary if addr == target.primary.addr else target.alt
        if path is None or seq <= path.last_answered or seq > self.seq:
            return
        sent = self._rounds.sent_at(seq)
        if sent is not None:
            # Read time, not arrival: a busy loop makes answers look slower, which only
            # lengthens the deadline; our own lateness never shortens a host's.
            path.times.sample((self._clock() if at is None else at) - sent)
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

    def _missed(self, path: _Path, now: float) -> int:
        """Probes in a row, up to the newest, that this path left unanswered past its
        deadline. The newest probes, still within it, are neither missed nor answered."""
        deadline = path.times.deadline(self._clamp)
        self._soonest = min(self._soonest, deadline)
        overdue = self._rounds.newest_sent_by(now - deadline)
        new = overdue - max(path.counted, path.last_answered)
        if new > 0:
            metrics.HOST_PROBES_MISSED.inc(new)
            path.counted = overdue
        return overdue - path.last_answered

    def judge(self, now: float | None = None) -> None:
        """Report what the paths' misses say now (`now` on the prober's clock)."""
        now = self._clock() if now is None else now
        misses = self.settings.misses
        # A verdict on one path's silence waits for as much evidence as one on two
        # paths': twice the misses, so that every verdict has about the same chance,
        # p ** (2 * misses), of being loss alone.
        alone = 2 * misses
        self._soonest = self._clamp.ceiling
        for target in self._targets.values():
            primary, alt = target.primary, target.alt
            missed = self._missed(primary, now)
            if alt is None:
                if missed >= alone and HOST_DOWN not in target.reported:
                    self._report(target, HOST_DOWN, "down")
                continue
            alt_missed = self._missed(alt, now)
            if missed < misses:
                if alt_missed >= alone and not target.alt_silent:
                    target.alt_silent = True
                    metrics.HOST_ALT_PATH_LOST.inc()
                    log.warning("alt path silent, address answers", extra={"host": target.name})
            elif alt_missed >= misses:
                if HOST_DOWN not in target.reported:
                    self._report(target, HOST_DOWN, "down")
            elif missed >= alone and not target.reported and self._outlived(primary, alt):
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

    def send_round(self) -> float:
        """Send the next probe to every path; the time the last went out."""
        self.seq += 1
        if self._sock is not None:
            probe = wire.encode_probe(self.seq)
            for target in self._targets.values():
                for path in (target.primary, target.alt):
                    if path is not None:
                        self._send(target, probe, path.addr)
        at = self._clock()
        self._rounds.sent(self.seq, at)
        return at

    def check(self) -> float:
        """Read every answer waiting, then judge as of just before the read; that time."""
        now = self._clock()
        self._read()
        self.judge(now)
        return now

    async def _run(self) -> None:
        interval = self.settings.interval
        clock = self._clock
        next_tick = clock()
        while True:
            now = clock()
            self._read()  # every answer in by `now` counts, however late we are
            late = now - next_tick
            if late > self._clamp.ceiling:
                # A stall longer than any answer is waited for: our socket may have had
                # to drop answers it could not hold. Judging now would blame the hosts
                # for our own pause.
                self._restart_count()
            else:
                self.judge(now)
            if late > interval:
                next_tick = now  # no burst of rounds to catch up: the beat goes on from now
            sent = self.send_round()
            next_tick += interval
            due = sent + self._soonest + _SLACK
            if due < next_tick:
                # This round's answers are overdue before the next round: judge then.
                await asyncio.sleep(max(0.0, due - clock()))
                self.check()
            await asyncio.sleep(max(0.0, next_tick - clock()))

    def _read(self) -> None:
        """Take every answer waiting in the socket (the event loop hands us one
        readiness at a time, and a round brings one answer per path)."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error surfaced on the socket: nothing to read
                log.debug("probe socket: %s", exc)
                continue
            decoded = wire.decode_answer(data)
            if decoded is not None:
                self.answered((str(addr[0]), int(addr[1])), decoded[0])

    def _send(self, target: _Target, probe: bytes, addr: Addr) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(probe, addr)
        except OSError as exc:
            log.warning(
                "probe not sent", extra={"host": target.name, "to": addr[0], "error": str(exc)}
            )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECV_BUFFER)
            sock.bind(("0.0.0.0", 0))
            loop.add_reader(sock.fileno(), self._read)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._task = asyncio.create_task(self._run(), name="host-prober")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        await asyncio.gather(*self._pending, return_exceptions=True)
