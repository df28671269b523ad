"""The UDP host prober against real UDP responders on loopback addresses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from opendoctor.core.model import Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.wire import probe as wire
from tests.conftest import eventually


class Responder(asyncio.DatagramProtocol):
    """A compute host's heartbeat answerer, as the lab's hosts run it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        seq = wire.decode_probe(data)
        if seq is not None and self.transport is not None:
            self.transport.sendto(wire.encode_answer(seq, self.name), addr)


async def respond(name: str, address: str) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Responder(name), local_addr=(address, 4100)
    )
    return transport


@pytest.fixture
async def hosts() -> AsyncIterator[dict[str, asyncio.DatagramTransport]]:
    running = {f"h{i}": await respond(f"h{i}", f"127.43.1.{i}") for i in (1, 2, 3)}
    yield running
    for t in running.values():
        t.close()


async def start_prober(events: list[Event], **kw: float) -> HostProber:
    async def emit(event: Event) -> None:
        events.append(event)

    prober = HostProber(MonitorSettings(**kw), emit)
    for i in (1, 2, 3):
        prober.watch(Host(f"h{i}", f"127.43.1.{i}", 4100))
    await prober.start()
    return prober


async def test_a_silent_host_is_reported_down_then_up(
    hosts: dict[str, asyncio.DatagramTransport],
) -> None:
    events: list[Event] = []
    prober = await start_prober(events, interval=0.02, misses=3)
    try:
        await eventually(lambda: prober.rounds > 5, what="a few probe rounds")
        assert events == []
        hosts["h2"].close()
        killed = time.time()
        down = await eventually(lambda: [e for e in events if e.status == "down"], what="down")
        assert [e.hostname for e in down] == ["h2"]
        assert down[0].type == "compute.host.down"
        assert down[0].trace["T01"] >= killed
        assert down[0].details["probes_missed"] >= 3
        # At least `misses` intervals must pass: no verdict from a single lost probe.
        assert down[0].time - killed >= 2 * 0.02

        hosts["h2"] = await respond("h2", "127.43.1.2")
        up = await eventually(lambda: [e for e in events if e.status == "up"], what="up")
        assert [e.hostname for e in up] == ["h2"]
        assert prober.is_down("h2") is False
    finally:
        await prober.stop()


async def test_healthy_hosts_raise_no_alarm(hosts: dict[str, asyncio.DatagramTransport]) -> None:
    events: list[Event] = []
    prober = await start_prober(events, interval=0.01, misses=2)
    try:
        await eventually(lambda: prober.rounds >= 200, what="200 probe rounds")
        assert events == []
    finally:
        await prober.stop()


async def test_a_stalled_event_loop_is_not_blamed_on_the_hosts(
    hosts: dict[str, asyncio.DatagramTransport],
) -> None:
    events: list[Event] = []
    prober = await start_prober(events, interval=0.01, misses=2)
    try:
        await eventually(lambda: prober.rounds > 5, what="a few probe rounds")
        # Block the loop for thirty intervals, as a long synchronous call would.
        time.sleep(0.3)  # noqa: ASYNC251 - the stall is the point of the test
        start = prober.rounds
        await eventually(lambda: prober.rounds > start + 10, what="probing to resume")
        assert events == []
    finally:
        await prober.stop()


async def test_unwatched_hosts_are_not_probed(hosts: dict[str, asyncio.DatagramTransport]) -> None:
    events: list[Event] = []
    prober = await start_prober(events, interval=0.02, misses=2)
    try:
        prober.unwatch("h3")
        hosts["h3"].close()
        start = prober.rounds
        await eventually(lambda: prober.rounds > start + 10, what="ten probe rounds")
        assert events == []
    finally:
        await prober.stop()


async def test_a_spoofed_answer_does_not_hide_a_death(
    hosts: dict[str, asyncio.DatagramTransport],
) -> None:
    """Someone on the network sends answers in a dying host's name, numbered far ahead
    of the probes (and a guess at the next ones): the host is reported down all the
    same, because only answers to probes that were sent count."""
    events: list[Event] = []
    prober = await start_prober(events, interval=0.02, misses=3)
    try:
        await eventually(lambda: prober.rounds > 5, what="a few probe rounds")
        hosts["h2"].close()
        # As the prober's socket hands them over: answers from h2's address.
        for seq in (10**15, 2**62, 1, prober.seq + 1000):
            prober.answered(("127.43.1.2", 4100), seq)
        down = await eventually(
            lambda: [e for e in events if e.hostname == "h2" and e.status == "down"],
            what="h2 reported down",
        )
        assert len(down) == 1
    finally:
        await prober.stop()
