"""The floor of `bench detect`: the least a UDP heartbeat can do in Python, nothing more.

Standard library only, and run by its path (never imported from opendoctor), so that
the figures it gives owe nothing to our code:

    python detect_echo.py responder ADDRESS PORT
    python detect_echo.py prober ADDRESS PORT INTERVAL MISSES

The responder echoes every datagram. The prober sends a numbered datagram every
INTERVAL seconds and declares the peer down as BFD does: when nothing has come back
for MISSES intervals (a timer re-armed by every answer, not a count of rounds). It
prints one JSON line per change, `{"up": wall time}` and `{"down": wall time}`, and on
SIGTERM `{"rtt": [seconds, ...], "cpu": seconds, "wall": seconds}` (CPU and wall time
since probing began) before it exits.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Prober(asyncio.DatagramProtocol):
    def __init__(self, interval: float, misses: int) -> None:
        self.interval = interval
        self.misses = misses
        self.sent: dict[int, float] = {}
        self.rtt: list[float] = []
        self.alive = False
        self.timer: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        sent = self.sent.pop(int(data), None)
        if sent is None:
            return
        self.rtt.append(now - sent)
        if not self.alive:
            self.alive = True
            _say({"up": time.time()})
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.interval * self.misses, self._down)

    def _down(self) -> None:
        self.alive = False
        self.timer = None
        _say({"down": time.time()})


def _say(what: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()


async def _respond(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Echo, local_addr=(address, port))
    await asyncio.Event().wait()


async def _probe(address: str, port: int, interval: float, misses: int) -> None:
    loop = asyncio.get_running_loop()
    prober = _Prober(interval, misses)
    transport, _ = await loop.create_datagram_endpoint(lambda: prober, local_addr=("127.0.0.1", 0))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    began, cpu = time.monotonic(), _cpu()
    seq, tick = 0, loop.time()
    while not stop.is_set():
        seq += 1
        prober.sent[seq] = time.monotonic()
        prober.sent.pop(seq - 1000, None)  # never answered: forget it
        transport.sendto(b"%d" % seq, (address, port))
        tick += interval
        await asyncio.sleep(max(0.0, tick - loop.time()))
    _say({"rtt": prober.rtt, "cpu": _cpu() - cpu, "wall": time.monotonic() - began})


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    if argv[:1] == ["responder"] and len(argv) == 3:
        asyncio.run(_respond(argv[1], int(argv[2])))
    elif argv[:1] == ["prober"] and len(argv) == 5:
        asyncio.run(_probe(argv[1], int(argv[2]), float(argv[3]), int(argv[4])))
    else:
        sys.stderr.write(__doc__ or "")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
