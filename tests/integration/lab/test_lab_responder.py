"""A lab host answers heartbeat probes on both paths while its event loop is blocked
(`opendoctor.lab.procs.responder`): a busy host is not a dead one."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from opendoctor.lab.procs.host import LabHost
from opendoctor.wire.probe import encode_probe

IP_PREFIX = "127.234"
ADDR, ALT = f"{IP_PREFIX}.1.1", f"{IP_PREFIX}.251.1"
PORT = 4100
BLOCKED_FOR = 0.3  # seconds the host's event loop does nothing else
PROMPT = 0.1  # an answer later than this would have waited for the loop


@pytest.fixture
async def host() -> AsyncIterator[LabHost]:
    host = LabHost("compute1", ADDR, PORT, PORT + 1, "inline", alt_address=ALT)
    await host.start()
    try:
        yield host
    finally:
        await host.close()


class Prober(threading.Thread):
    """Probes both paths in turn, each as soon as the last answer came, from the moment
    `blocked` is set; keeps the delays of the answers that came before `unblocked`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.delays: dict[str, list[float]] = {ADDR: [], ALT: []}

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5.0)
            self.blocked.wait(5.0)
            seq = 0
            while not self.unblocked.is_set():
                seq += 1
                addr = (ADDR, ALT)[seq % 2]
                sent = time.monotonic()
                sock.sendto(encode_probe(seq), (addr, PORT))
                sock.recvfrom(512)
                if not self.unblocked.is_set():
                    self.delays[addr].append(time.monotonic() - sent)


def block_this_loop(prober: Prober, busy: bool) -> None:
    """Hold the running event loop (the host's): in a system call, or busy on the CPU
    with the GIL (handed over only at the interpreter's switch interval)."""
    prober.blocked.set()
    if busy:
        end = time.monotonic() + BLOCKED_FOR
        while time.monotonic() < end:
            pass
    else:
        time.sleep(BLOCKED_FOR)
    prober.unblocked.set()


@pytest.mark.parametrize("busy", [False, True], ids=["sleeping", "cpu-busy"])
async def test_probes_are_answered_while_the_event_loop_is_blocked(
    host: LabHost, busy: bool
) -> None:
    prober = Prober()
    prober.start()
    block_this_loop(prober, busy)
    await asyncio.to_thread(prober.join, 10.0)
    for addr, delays in prober.delays.items():
        assert len(delays) >= 3, f"{addr}: {len(delays)} answers while the loop was blocked"
        assert max(delays) < PROMPT, f"{addr}: answers took up to {max(delays) * 1000:.0f} ms"


async def test_a_cut_link_reaches_the_responder(host: LabHost) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)

        def answers(addr: str, probes: int = 20) -> int:
            got = 0
            for seq in range(1, probes + 1):
                sock.sendto(encode_probe(seq), (addr, PORT))
                try:
                    sock.recvfrom(512)
                    got += 1
                except TimeoutError:
                    pass
            return got

        assert (await host.handle(b'{"op": "cut_link"}'))["link"] == "cut"
        assert await asyncio.to_thread(answers, ADDR, 3) == 0
        assert await asyncio.to_thread(answers, ALT) == 20
        await host.handle(b'{"op": "restore_link"}')
        assert await asyncio.to_thread(answers, ADDR) == 20
