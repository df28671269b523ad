"""The prober's own lateness is never blamed on a host: its process descheduled while it
reads its socket, or halfway through sending a round. A simulated network and clock:
no sockets, no waiting."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator

import pytest

from opendoctor.core.model import HOST_DOWN, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.wire import probe as wire

Addr = tuple[str, int]
H1 = Host("h1", "10.9.1.1", 4100, alt_address="10.9.2.1")
H2 = Host("h2", "10.9.1.2", 4100, alt_address="10.9.2.2")
INTERVAL = 0.01
STALL = 0.04  # how long the prober's process is descheduled, once


@pytest.fixture(autouse=True)
async def _reports_delivered() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0)


class Net:
    """The prober's socket and clock: every host answers `delay` after a probe reaches
    it; `stall_on_read` / `stall_on_send_to` pause the prober's process once."""

    def __init__(self, delay: float) -> None:
        self.now = 1000.0
        self.delay = delay
        self.arriving: list[tuple[float, int, bytes, Addr]] = []
        self._n = 0
        self.stall_on_read = False
        self.stall_on_send_to: Addr | None = None
        self.reports: list[tuple[str, str, str]] = []  # what the prober emitted

    def clock(self) -> float:
        return self.now

    def _stall(self) -> None:
        self.now += STALL

    def sendto(self, data: bytes, addr: Addr) -> int:
        if addr == self.stall_on_send_to:
            self.stall_on_send_to = None
            self._stall()  # descheduled just before this probe went out
        seq = wire.decode_probe(data)
        assert seq is not None
        answer = wire.encode_answer(seq, "h")
        self._n += 1
        heapq.heappush(self.arriving, (self.now + self.delay, self._n, answer, addr))
        return len(data)

    def recvfrom(self, size: int) -> tuple[bytes, Addr]:
        if self.arriving and self.arriving[0][0] <= self.now:
            _, _, data, addr = heapq.heappop(self.arriving)
            return data, addr
        if self.stall_on_read:
            self.stall_on_read = False
            self._stall()  # descheduled on the way out of the read: answers come meanwhile
        raise BlockingIOError


def prober(net: Net) -> HostProber:
    async def emit(event: Event) -> None:
        net.reports.append((event.hostname, event.type, event.status))

    # One miss makes a verdict: a single answer wrongly counted missed shows.
    settings = MonitorSettings(interval=INTERVAL, misses=1)
    p = HostProber(settings, emit, net.clock)
    p._sock = net  # type: ignore[assignment]
    p.watch(H1)
    p.watch(H2)
    return p


async def reports(net: Net) -> list[tuple[str, str, str]]:
    """Every report emitted (they go out as tasks: let them run)."""
    await asyncio.sleep(0)
    return sorted(net.reports)


def advance(p: HostProber, net: Net, to: float) -> None:
    """Time passes; the event loop hands the prober each answer as it arrives."""
    while net.arriving and net.arriving[0][0] <= to:
        net.now = max(net.now, net.arriving[0][0])
        p._read()
    net.now = max(net.now, to)


def beat(p: HostProber, net: Net, rounds: int) -> None:
    """`rounds` rounds as `_run` plays them: judge, send, judge at the deadline."""
    for _ in range(rounds):
        p.check()
        sent = p.send_round()
        advance(p, net, sent + p._soonest + 0.001)
        p.check()
        advance(p, net, sent + INTERVAL)


async def test_a_read_descheduled_before_its_end_does_not_blame_the_hosts() -> None:
    """Answers take 6 ms: the newest round's are not in yet when the prober reads, and
    come while its process waits for a CPU. Judged as of the read, nothing is late."""
    net = Net(delay=0.006)
    p = prober(net)
    beat(p, net, 50)
    assert p.deadline("h1") == pytest.approx(0.006, abs=0.001)
    p.send_round()
    net.now += 0.005  # the round's answers are 1 ms away
    net.stall_on_read = True
    p.check()
    beat(p, net, 5)
    assert await reports(net) == []


async def test_a_round_descheduled_halfway_does_not_blame_the_hosts() -> None:
    """The process pauses after probing h1, before probing h2: h2's probes go out late,
    and h2 answers them as fast as ever."""
    net = Net(delay=0.0003)
    p = prober(net)
    beat(p, net, 50)
    net.stall_on_send_to = (H2.address, H2.heartbeat_port)
    beat(p, net, 5)
    assert await reports(net) == []


async def test_a_host_that_stops_answering_is_still_reported() -> None:
    net = Net(delay=0.0003)
    p = prober(net)
    beat(p, net, 50)
    net.delay = 10.0
    beat(p, net, 5)
    assert await reports(net) == [("h1", HOST_DOWN, "down"), ("h2", HOST_DOWN, "down")]
