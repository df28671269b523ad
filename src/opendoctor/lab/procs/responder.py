"""A lab host's heartbeat responder: a thread of its own, not the host's event loop.

A real host answers its prober from a small daemon (think BFD) that runs at a high
priority and does nothing else, so that neither a busy host nor a busy machine delays
its answers. The lab host's event loop also serves control requests, inline VMs and
guest heartbeats, and on a loaded machine a normal-priority process waits tens of
milliseconds for a CPU: answered from that loop, a 10 ms beat took live hosts for dead.

So the answers come from a thread that blocks in `select` over both paths and asks
the kernel for a real-time priority (SCHED_RR) for itself alone, or failing that a
lower nice value; without either it still runs, and says so once. The host process
lowers `sys.setswitchinterval` (see `host.main`) so that a CPU-busy main thread hands
the GIL over quickly when an answer is due.

The thread reads its flags (a path's link cut, its loss) from plain attributes the
event loop sets: each is one attribute write, atomic under the GIL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import threading
from dataclasses import dataclass, field

from opendoctor.wire.probe import decode_probe, encode_answer

log = logging.getLogger("opendoctor.lab.procs.host")

# SCHED_RR priority asked for (1..99): above every normal task, below the kernel's own.
RT_PRIORITY = 10
# The nice value asked for if a real-time priority is refused.
NICE = -10
# Probes answered per wake-up and path at most: a flood cannot starve the other path.
_BATCH = 64


@dataclass(slots=True)
class PathFlags:
    """What the event loop tells the responder about one path."""

    answering: bool = True  # False: the link is cut, probes are dropped unanswered
    loss: float = 0.0  # the share of answers dropped at random (a lossy network)
    random: random.Random = field(default_factory=random.Random)


def raise_priority() -> str:
    """Raise the calling thread's scheduling priority (Linux: per thread); what it got."""
    try:
        # pid 0: the calling thread only, not the process.
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
        return f"SCHED_RR {RT_PRIORITY}"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        return f"nice {NICE}"
    except (AttributeError, OSError):
        return "normal"


class Responder:
    """Answers heartbeat probes on each of `paths` (an address and its flags: the host's
    address, then its alt address if any) at `port`, from a thread started by `start`.
    Binds at once: an address taken fails here (OSError), not in the thread."""

    def __init__(self, name: str, paths: list[tuple[str, PathFlags]], port: int) -> None:
        self.name = name
        self.flags = [flags for _, flags in paths]
        self.priority = "not started"
        self._socks: list[socket.socket] = []
        # Wakes the thread out of select when the host closes.
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        try:
            for address, _ in paths:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._socks.append(sock)
                sock.bind((address, port))
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise

    def start(self) -> None:
        # A daemon: a host that exits (or is killed: a power loss) takes it along.
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (*self._socks, self._wake_r, self._wake_w):
            sock.close()

    def _run(self) -> None:
        self.priority = raise_priority()
        if self.priority == "normal":
            log.warning("%s: heartbeat answers at normal priority (no other permitted)", self.name)
        else:
            log.info("%s: heartbeat answers at %s", self.name, self.priority)
        paths = dict(zip(self._socks, self.flags, strict=True))
        watched = [*self._socks, self._wake_r]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if self._wake_r in ready:
                return
            for sock in ready:
                self._answer(sock, paths[sock])

    def _answer(self, sock: socket.socket, flags: PathFlags) -> None:
        for _ in range(_BATCH):
            try:
                data, addr = sock.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error surfaced on the socket: nothing to answer
                continue
            seq = decode_probe(data)
            if seq is None or not flags.answering:
                continue
            if flags.loss and flags.random.random() < flags.loss:
                continue
            with contextlib.suppress(OSError):  # the prober's socket went away
                sock.sendto(encode_answer(seq, self.name), addr)
