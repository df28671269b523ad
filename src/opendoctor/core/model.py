"""Plain dataclasses that travel through the hot path: events, resources, traces.

Pydantic models live at the edges (API, config); these stay cheap to build and copy.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from time import time as _now
from typing import Any

HOST_DOWN = "compute.host.down"
# The host answers on its second path (alt_address) but not on its address: a cut link.
HOST_UNREACHABLE = "compute.host.unreachable"
INSTANCE_UPDATE = "compute.instance.update"
# Faults of one server, as the host side reports them (guest heartbeat, process exit).
HEARTBEAT_MISSED = "compute.instance.heartbeat.missed"
HEARTBEAT_UNHEALTHY = "compute.instance.heartbeat.unhealthy"
PROCESS_EXITED = "compute.instance.lifecycle.exited"
HOST_EVENTS = frozenset({HOST_DOWN, HOST_UNREACHABLE})
# A fault of any other resource in the entity graph (a switch, a port, a power feed),
# named by details.resource_type and details.resource_id; the templates decide what
# it means.
RESOURCE_DOWN = "resource.down"
INSTANCE_EVENTS = frozenset({HEARTBEAT_MISSED, HEARTBEAT_UNHEALTHY, PROCESS_EXITED})

# Trait type codes of the Aodh/Panko event model.
TRAIT_STRING, TRAIT_INT, TRAIT_FLOAT, TRAIT_DATETIME = 1, 2, 3, 4

# Profiler checkpoints (numbering follows the original Doctor profiler).
CHECKPOINTS: dict[str, str] = {
    "T00": "fault injected",
    "T01": "fault detected",
    "T02": "affected resources found",
    "T03": "servers set to error",
    "T04": "host marked down",
    "T05": "host fenced (power off confirmed)",
    "T06": "first evacuation requested",
    "T09": "consumer notified",
    "T10": "standby active, load balancer switched",
    "T11": "servers evacuated and serving",
}


def new_id() -> str:
    return str(uuid.uuid4())


def new_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs, as `new_id` writes them, from one read of the
    system's randomness: a storm's request of a hundred events spent a tenth of its CPU
    making their ids one by one."""
    raw = bytearray(os.urandom(16 * count))
    out = []
    for i in range(0, 16 * count, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # the RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def iso(ts: float) -> str:
    """Epoch seconds as the ISO 8601 form OpenStack APIs use (UTC, microseconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def resource_key(hostname: str, instance_id: str | None) -> tuple[str, str]:
    """(type, id) of what a fault is about. Faults of other resources than hosts and
    servers (a switch, a power feed) carry the resource's graph key, `type:id`, where a
    host's name would be; host names never hold a colon."""
    if instance_id is not None:
        return ("server", instance_id)
    type_, sep, id_ = hostname.partition(":")
    if sep:
        return (type_, id_)
    return ("host", hostname)


@dataclass(slots=True)
class Event:
    """A fault report from a monitor (southbound, Doctor format)."""

    type: str
    hostname: str
    status: str
    time: float
    monitor: str = ""
    monitor_event_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    instance_id: str | None = None  # set for the faults of one server
    # Who sent it, as authenticated: the monitor token's name ("" from inside the service).
    reporter: str = ""
    id: str = field(default_factory=new_id)
    received: float = field(default_factory=_now)
    # Checkpoints known before the service saw the event (T00 from a lab, T01 from a monitor).
    trace: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status != "up"

    @property
    def key(self) -> tuple[str, str]:
        """The resource the event is about: reports about one resource make one fault.

        A host's reports share (\"host\", hostname). A server's share (\"server\", id)
        whatever their type, so a killed VM reported both by its host (process exit) and
        by its missing heartbeat is one fault, and its owner is told once.
        """
        return resource_key(self.hostname, self.instance_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Trait:
    name: str
    type: int
    value: Any

    def as_list(self) -> list[Any]:
        return [self.name, self.type, self.value]


@dataclass(slots=True)
class NotificationEvent:
    """A northbound event (what alarms match), e.g. compute.instance.update for one server."""

    event_type: str
    traits: dict[str, Trait]
    generated: float = field(default_factory=_now)
    message_id: str = field(default_factory=new_id)
    fault_id: str | None = None

    @classmethod
    def build(
        cls,
        event_type: str,
        fault_id: str | None = None,
        message_id: str | None = None,
        **values: Any,
    ) -> NotificationEvent:
        traits: dict[str, Trait] = {}
        for name, value in values.items():
            if value is None:  # no trait rather than the string "None"
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                code = TRAIT_STRING
                value = str(value)
            else:
                code = TRAIT_INT if isinstance(value, int) else TRAIT_FLOAT
            traits[name] = Trait(name, code, value)
        if message_id is None:
            return cls(event_type=event_type, traits=traits, fault_id=fault_id)
        return cls(event_type=event_type, traits=traits, fault_id=fault_id, message_id=message_id)

    @property
    def project_id(self) -> str | None:
        for name in ("project_id", "tenant_id"):
            trait = self.traits.get(name)
            if trait is not None:
                return str(trait.value)
        return None

    def to_wire(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "generated": iso(self.generated),
            "traits": [t.as_list() for t in self.traits.values()],
        }


@dataclass(slots=True)
class Host:
    name: str
    address: str  # IP the host answers heartbeats on
    heartbeat_port: int = 0
    state: str = "up"  # up | down  (as the VIM sees it)
    forced_down: bool = False
    enabled: bool = True
    # A second IP it answers heartbeats on (same port), over a path independent of
    # `address` (a storage or data network): tells a dead host from a cut link.
    alt_address: str | None = None
    # What the host can run, as the VIM reports it; 0 where it does not say.
    vcpus: int = 0
    ram_mb: int = 0
    # What it runs, as the VIM reports it (a hypervisor's version): maintenance tells an
    # upgraded host by it. "" where the VIM does not say.
    version: str = ""


@dataclass(slots=True)
class Server:
    id: str
    name: str
    host: str
    project_id: str
    status: str = "ACTIVE"  # ACTIVE | ERROR | SHUTOFF | ...
    endpoint: str | None = None  # URL the server's application answers on
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. HA_Enabled
    # The size of its flavor; 0 where the VIM does not say.
    vcpus: int = 0
    ram_mb: int = 0


@dataclass(frozen=True, slots=True)
class ServerGroup:
    """A VIM's server group: servers placed together or apart, and the peers that
    server-group messaging reaches (`heartbeat/`)."""

    id: str
    name: str
    project_id: str
    policy: str = ""  # affinity | anti-affinity | soft-affinity | soft-anti-affinity | ""
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service inside a server, as its guest agent's health command last found it."""

    name: str
    healthy: bool
    reason: str | None = None
    since: float = 0.0  # when it last changed (epoch seconds, the service's clock)


@dataclass(slots=True)
class VimChange:
    """One change reported by the VIM's change feed."""

    kind: str  # "host" | "server"
    op: str  # "upsert" | "delete"
    host: Host | None = None
    server: Server | None = None
