"""Where a server may go: each host's room and load, counting placements in flight, and
the lab's scheduler (the requested host if it can take the server, else the least
loaded usable one).

Placements in flight count as load and as used room until their VM runs, so parallel
creations and evacuations spread out instead of all picking the same idle host; at
most `START_CONCURRENCY` VMs start at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

from opendoctor.lab.manager.records import (
    NOTHING,
    HostRecord,
    LabError,
    ServerRecord,
    Size,
    room_problem,
)

START_CONCURRENCY = 64


def size_of(server: ServerRecord) -> Size:
    """What `server` takes of its host's capacity."""
    return Size(server.vcpus, server.ram_mb)


class Placement:
    def __init__(
        self, hosts: dict[str, HostRecord], servers: Callable[[], Iterable[ServerRecord]]
    ) -> None:
        self.hosts = hosts
        self._servers = servers  # the servers placed now
        self._pending: dict[str, int] = dict.fromkeys(hosts, 0)
        self._pending_use: dict[str, Size] = dict.fromkeys(hosts, NOTHING)
        self._gate = asyncio.Semaphore(START_CONCURRENCY)

    def load(self, host: str) -> int:
        return sum(1 for s in self._servers() if s.host == host) + self._pending[host]

    def room(self, host: HostRecord, size: Size) -> str | None:
        """Why `host` cannot take a server of `size` (placements in flight count), or None."""
        used = sum((size_of(s) for s in self._servers() if s.host == host.name), NOTHING)
        capacity = Size(host.vcpus, host.ram_mb)
        return room_problem(host.name, capacity, used + self._pending_use[host.name], size)

    def target(
        self, requested: HostRecord | None, source: str | None, size: Size | None = None
    ) -> HostRecord:
        """The requested host if it can take a server, else the least loaded usable host."""
        size = size or Size()
        if requested is not None:
            target = requested
            if target.name == source:
                raise LabError(409, f"server is already on host {source}")
            if not target.alive:
                raise LabError(409, f"host {target.name} is not running")
            if target.forced_down:
                raise LabError(409, f"host {target.name} is forced down")
            if not target.enabled:
                raise LabError(409, f"host {target.name} is disabled")
            if (full := self.room(target, size)) is not None:
                raise LabError(409, full)
            return target
        candidates = [
            h
            for h in self.hosts.values()
            if h.schedulable and h.name != source and self.room(h, size) is None
        ]
        if not candidates:
            raise LabError(409, "no host is alive, enabled, not forced down and has room")
        return min(candidates, key=lambda h: self.load(h.name))

    @contextlib.asynccontextmanager
    async def placing(self, host: str, size: Size) -> AsyncIterator[None]:
        """While a server of `size` is being started on `host` (at most
        `START_CONCURRENCY` at once)."""
        self._pending[host] += 1
        self._pending_use[host] += size
        try:
            async with self._gate:
                yield
        finally:
            self._pending[host] -= 1
            self._pending_use[host] -= size
