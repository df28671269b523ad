"""The lab manager's records: what the lab's VIM knows about hosts and servers, and its feed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.lab.spec import DEFAULT_HOST_VERSION


class LabError(Exception):
    """A lab API request that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Size:
    """A server's flavor: what it takes of its host's capacity."""

    vcpus: int = 1
    ram_mb: int = 512

    def __add__(self, other: Size) -> Size:
        return Size(self.vcpus + other.vcpus, self.ram_mb + other.ram_mb)

    def __sub__(self, other: Size) -> Size:
        return Size(self.vcpus - other.vcpus, self.ram_mb - other.ram_mb)


NOTHING = Size(0, 0)


def room_problem(name: str, capacity: Size, used: Size, size: Size) -> str | None:
    """Why a host of `capacity` with `used` taken cannot take a server of `size`, or None
    if it can (as a VIM's scheduler refuses to overcommit); 0 capacity: no limit."""
    if capacity.vcpus and used.vcpus + size.vcpus > capacity.vcpus:
        return f"host {name} has {capacity.vcpus - used.vcpus} of {size.vcpus} vcpus free"
    if capacity.ram_mb and used.ram_mb + size.ram_mb > capacity.ram_mb:
        return f"host {name} has {capacity.ram_mb - used.ram_mb} of {size.ram_mb} MB free"
    return None


@dataclass(slots=True)
class HostRecord:
    name: str
    proc: HostProc
    forced_down: bool = False
    enabled: bool = True
    vcpus: int = 0  # capacity; 0: no limit
    ram_mb: int = 0
    # What it runs (as a hypervisor reports its version), and what it boots into next
    # (an upgrade an operator staged): taken at the next power-on.
    version: str = DEFAULT_HOST_VERSION
    staged_version: str | None = None

    @property
    def address(self) -> str:
        return self.proc.address

    @property
    def alive(self) -> bool:
        return self.proc.alive

    @property
    def schedulable(self) -> bool:
        return self.alive and self.enabled and not self.forced_down

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.proc.address,
            "alt_address": self.proc.alt_address,
            "heartbeat_port": self.proc.heartbeat_port,
            # What the VIM believes: it only learns of a dead host when told (force-down).
            "state": "down" if self.forced_down else "up",
            "forced_down": self.forced_down,
            "enabled": self.enabled,
            "vcpus": self.vcpus,
            "ram_mb": self.ram_mb,
            "version": self.version,
            "staged_version": self.staged_version,
            "alive": self.proc.alive,
            "pid": self.proc.pid,
            # Lab truth too: probes on `address` go unanswered (alt_address still answers).
            "link_cut": self.proc.alive and self.proc.link_cut,
            # Heartbeat answers dropped at random, per path (fault injection: a lossy net).
            "heartbeat_loss": dict(self.proc.loss) if self.proc.alive else None,
        }


@dataclass(slots=True)
class ServerRecord:
    id: str
    name: str
    host: str
    project_id: str
    address: str
    port: int
    number: int = 0  # creation order, which is also address order
    status: str = "ACTIVE"
    # The application inside the VM (not the VIM's business): its role and health flag.
    role: str = "active"
    healthy: bool = True
    # The VIM's: what the server's owner asked for (HA_Enabled, ...), and its flavor's size.
    metadata: dict[str, str] = field(default_factory=dict)
    vcpus: int = 1
    ram_mb: int = 512
    # Named services of the application: health flags, and restarts through the agent
    # (as the VM's host last reported them).
    services: dict[str, bool] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    group: str | None = None  # the server group it joined when it was created
    rebuilds: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}/"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "project_id": self.project_id,
            "status": self.status,
            "endpoint": self.endpoint,
            "role": self.role,
            "healthy": self.healthy,
            "metadata": dict(self.metadata),
            "vcpus": self.vcpus,
            "ram_mb": self.ram_mb,
            "services": [
                {"name": n, "healthy": ok, "restarts": self.restarts.get(n, 0)}
                for n, ok in self.services.items()
            ],
            "group": self.group,
            "rebuilds": self.rebuilds,
        }


class ChangeLog:
    """Numbered changes to host and server records, with long-polling readers."""

    def __init__(self, keep: int = 100_000) -> None:
        self.seq = 0
        self._keep = keep
        self._items: list[dict[str, Any]] = []
        self._event = asyncio.Event()

    def append(self, kind: str, op: str, obj: dict[str, Any]) -> None:
        self.seq += 1
        self._items.append({"seq": self.seq, "kind": kind, "op": op, "object": obj})
        if len(self._items) > 2 * self._keep:
            # Trim in large steps so that appends stay O(1) on average.
            del self._items[: -self._keep]
        # Wake every waiting reader at once, then give later readers a fresh event.
        self._event.set()
        self._event = asyncio.Event()

    def after(self, since: int) -> list[dict[str, Any]]:
        if not self._items:
            return []
        start = max(0, since + 1 - self._items[0]["seq"])
        return self._items[start:]

    async def wait(
        self, since: int, wait: float, limit: int | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Changes newer than `since`, waiting up to `wait` seconds for one if there is
        none; at most `limit` of them, and the sequence number of the last one given."""
        if since > self.seq:
            # The reader saw an earlier run of the lab: give it everything we have.
            since = 0
        if since == self.seq and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), wait)
        items = self.after(since)
        if limit is not None and len(items) > limit:
            items = items[:limit]
            return items[-1]["seq"], items
        return self.seq, items
