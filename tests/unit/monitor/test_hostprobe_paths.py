"""The host prober's second path: a host's alt address tells a cut link from a dead host.

Real UDP responders on loopback addresses: `127.44.1.N` is a host's address, `127.44.2.N`
its alt address (`127.44.3.N` a replacement alt address).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.infra import metrics
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.wire import probe as wire
from tests.conftest import eventually

PORT = 4100


class Responder(asyncio.DatagramProtocol):
    """One address of a compute host's heartbeat answerer; counts the probes it gets."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.probes = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        seq = wire.decode_probe(data)
        if seq is not None and self.transport is not None:
            self.probes += 1
            self.transport.sendto(wire.encode_answer(seq, self.name), addr)


class Net:
    """Heartbeat answerers by address, each started and stopped on its own."""

    def __init__(self) -> None:
        self.running: dict[str, Responder] = {}

    async def up(self, name: str, address: str) -> Responder:
        loop = asyncio.get_running_loop()
        _, responder = await loop.create_datagram_endpoint(
            lambda: Responder(name), local_addr=(address, PORT)
        )
        self.running[address] = responder
        return responder

    def down(self, address: str) -> None:
        responder = self.running.pop(address)
        assert responder.transport is not None
        responder.transport.close()


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """h1 and h2 answer on their address and their alt address, h3 on its address only."""
    net = Net()
    for i in (1, 2, 3):
        await net.up(f"h{i}", f"127.44.1.{i}")
    for i in (1, 2):
        await net.up(f"h{i}", f"127.44.2.{i}")
    yield net
    for address in list(net.running):
        net.down(address)


def host(i: int, alt: str | None = "127.44.2") -> Host:
    return Host(f"h{i}", f"127.44.1.{i}", PORT, alt_address=f"{alt}.{i}" if alt else None)


class Probing:
    """A running prober and what it reported."""

    def __init__(self, prober: HostProber, events: list[Event]) -> None:
        self.prober = prober
        self.events = events

    def of(self, status: str, name: str = "h1") -> list[Event]:
        return [e for e in self.events if e.status == status and e.hostname == name]

    async def rounds(self, n: int) -> None:
        """Wait until `n` more probe rounds went out (and so were judged)."""
        start = self.prober.rounds
        await eventually(lambda: self.prober.rounds >= start + n, what=f"{n} probe rounds")


@pytest.fixture
async def probing(net: Net) -> AsyncIterator[Probing]:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    prober = HostProber(MonitorSettings(interval=0.02, misses=3), emit)
    prober.watch(host(1))
    prober.watch(host(2))
    prober.watch(host(3, alt=None))
    await prober.start()
    try:
        await eventually(lambda: prober.rounds > 5, what="a few probe rounds")
        yield Probing(prober, events)
    finally:
        await prober.stop()


async def test_a_cut_link_is_unreachable_then_down_when_the_alt_path_goes_too(
    net: Net, probing: Probing
) -> None:
    assert probing.events == []
    net.down("127.44.1.1")  # h1's link: its alt address still answers
    cut = time.time()
    (event,) = await eventually(lambda: probing.of("down"), what="h1 reported")
    assert (event.type, event.hostname, event.monitor) == (
        HOST_UNREACHABLE,
        "h1",
        "opendoctor-hostprobe",
    )
    assert event.details["path"] == "primary" and event.details["alt_answering"] is True
    assert event.details["probes_missed"] >= 3
    assert event.trace["T01"] >= cut and event.time - cut >= 2 * 0.02
    assert probing.prober.reported("h1") == [HOST_UNREACHABLE]
    assert probing.prober.is_down("h1") is False

    # It stays "only" unreachable while the alt path answers.
    await probing.rounds(10)
    assert probing.events == [event]

    # Then the alt path goes silent too: down as well; the unreachable report stays open.
    net.down("127.44.2.1")
    (down,) = await eventually(
        lambda: [e for e in probing.of("down") if e.type == HOST_DOWN], what="escalation"
    )
    assert down.trace["T01"] > event.trace["T01"]
    assert probing.prober.reported("h1") == [HOST_UNREACHABLE, HOST_DOWN]
    assert probing.prober.is_down("h1") is True

    # Its address answers again: every open report is closed, each by its own "up".
    await net.up("h1", "127.44.1.1")
    ups = await eventually(lambda: len(probing.of("up")) == 2 and probing.of("up"), what="ups")
    assert sorted(e.type for e in ups) == sorted([HOST_DOWN, HOST_UNREACHABLE])
    assert all(e.trace == {} for e in ups)
    assert len({e.monitor_event_id for e in probing.events}) == 4
    assert probing.prober.reported("h1") == []
    # Its alt address is still silent: that raises nothing.
    await probing.rounds(10)
    assert len(probing.events) == 4
    assert all(e.hostname == "h1" for e in probing.events)


async def test_a_dead_host_is_down_with_or_without_an_alt_address(
    net: Net, probing: Probing
) -> None:
    for address in ("127.44.1.2", "127.44.2.2", "127.44.1.3"):
        net.down(address)  # h2 (both addresses) and h3 (it has only one) die
    await eventually(
        lambda: probing.of("down", "h2") and probing.of("down", "h3"), what="both reported"
    )
    await probing.rounds(10)
    for name in ("h2", "h3"):
        (event,) = probing.of("down", name)
        assert event.type == HOST_DOWN and event.details["probes_missed"] >= 3
        assert probing.prober.reported(name) == [HOST_DOWN]
    assert probing.of("down", "h1") == []

    await net.up("h2", "127.44.1.2")
    await net.up("h3", "127.44.1.3")
    await eventually(lambda: probing.of("up", "h2") and probing.of("up", "h3"), what="ups")
    assert [e.type for e in probing.of("up", "h2") + probing.of("up", "h3")] == [HOST_DOWN] * 2


async def test_a_silent_alt_path_alone_raises_nothing(net: Net, probing: Probing) -> None:
    before = metrics.HOST_ALT_PATH_LOST._value.get()
    net.down("127.44.2.1")
    await eventually(
        lambda: metrics.HOST_ALT_PATH_LOST._value.get() == before + 1, what="the loss counted"
    )
    await probing.rounds(10)
    assert probing.events == []
    assert metrics.HOST_ALT_PATH_LOST._value.get() == before + 1  # once, not every round

    # Back again, it vouches for the host once more when the address goes silent.
    await net.up("h1", "127.44.2.1")
    await probing.rounds(2)
    net.down("127.44.1.1")
    (event,) = await eventually(lambda: probing.of("down"), what="h1 reported")
    assert event.type == HOST_UNREACHABLE


async def test_watch_follows_a_changed_alt_address(net: Net, probing: Probing) -> None:
    old = net.running["127.44.2.1"]
    new = await net.up("h1", "127.44.3.1")
    probing.prober.watch(host(1, alt="127.44.3"))
    await probing.rounds(3)
    was = old.probes
    await probing.rounds(5)
    assert old.probes == was  # no longer probed
    assert new.probes >= 5
    net.down("127.44.2.1")
    net.down("127.44.1.1")
    (event,) = await eventually(lambda: probing.of("down"), what="h1 reported")
    assert event.type == HOST_UNREACHABLE  # the new alt address answers

    # The same host without an alt address: nothing vouches for it any more.
    probing.prober.watch(host(1, alt=None))
    await eventually(lambda: probing.prober.is_down("h1"), what="h1 down")
    probed = new.probes
    await probing.rounds(5)
    assert new.probes == probed

    # Its address and alt address swapped: both still heard, nothing reported.
    probing.prober.watch(Host("h2", "127.44.2.2", PORT, alt_address="127.44.1.2"))
    await probing.rounds(10)
    assert probing.of("down", "h2") == []

    probing.prober.unwatch("h2")
    await probing.rounds(2)  # probes already on their way arrive
    h2 = net.running["127.44.1.2"], net.running["127.44.2.2"]
    probed_h2 = [r.probes for r in h2]
    await probing.rounds(5)
    assert [r.probes for r in h2] == probed_h2


async def test_a_stalled_event_loop_is_blamed_on_neither_path(net: Net, probing: Probing) -> None:
    net.down("127.44.1.1")
    (event,) = await eventually(lambda: probing.of("down"), what="h1 unreachable")
    for _ in range(3):
        # Block the loop for fifteen intervals, as a long synchronous call would.
        time.sleep(0.3)  # noqa: ASYNC251 - the stall is the point of the test
        await probing.rounds(10)
    assert probing.events == [event]  # no escalation, no healthy host reported


async def test_a_new_leader_takes_over_what_the_old_one_reported(net: Net) -> None:
    """A prober that takes over (a new monitor leader) is told which hosts are already
    reported down: a silent one is not reported again, one that answers is reported up."""
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    net.down("127.44.1.3")  # h3 still dead; h1 came back while nobody probed
    prober = HostProber(MonitorSettings(interval=0.02, misses=3), emit)
    for i, alt in ((1, "127.44.2"), (3, None)):
        prober.watch(host(i, alt=alt))
        prober.assume_reported(f"h{i}", [HOST_DOWN])
    await prober.start()
    try:
        await eventually(lambda: [(e.hostname, e.status) for e in events] == [("h1", "up")])
        start = prober.rounds
        await eventually(lambda: prober.rounds >= start + 10, what="ten more probe rounds")
        assert [(e.hostname, e.status) for e in events] == [("h1", "up")]
        assert prober.reported("h3") == [HOST_DOWN]
    finally:
        await prober.stop()
