"""Failover segments (Masakari's word): groups of hosts that recover into each other.

A segment names its recovery method; its hosts say whether they are reserved (kept
empty, and disabled in the VIM, until a failure needs them) or on maintenance (not
recovered from, not recovered to). Recovery reads them through `SegmentSource`
(`core.ports`); the API edits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from opendoctor.core.model import new_id

RecoveryMethod = Literal["auto", "reserved_host", "auto_priority", "rh_priority"]
RECOVERY_METHODS: tuple[str, ...] = get_args(RecoveryMethod)

# Masakari's notification types and their lifecycle.
NOTIFICATION_TYPES = ("COMPUTE_HOST", "VM", "PROCESS")
NotificationStatus = Literal["new", "running", "finished", "error", "failed", "ignored"]
# Statuses a notification keeps once it has them: nothing it started is still going on.
SETTLED_STATUSES: frozenset[str] = frozenset({"finished", "failed", "ignored"})

# The server metadata a server opts in to recovery with (Masakari's key), and the one
# that orders recovery: lower numbers first, none last.
HA_ENABLED_KEY = "HA_Enabled"
HA_PRIORITY_KEY = "HA_Priority"


@dataclass(slots=True)
class Segment:
    name: str
    recovery_method: RecoveryMethod = "auto"
    service_type: str = "COMPUTE"
    enabled: bool = True
    description: str | None = None
    # Recover every server of the segment's hosts, not only those with HA_Enabled=True.
    all_servers: bool = False
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None


@dataclass(slots=True)
class SegmentHost:
    name: str
    segment_id: str
    type: str = "COMPUTE"
    control_attributes: str = ""
    reserved: bool = False
    on_maintenance: bool = False
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None


@dataclass(slots=True)
class SegmentView:
    """A segment with its hosts: what recovery decides from."""

    segment: Segment
    hosts: list[SegmentHost]

    def host(self, name: str) -> SegmentHost | None:
        return next((h for h in self.hosts if h.name == name), None)


def opted_in(metadata: dict[str, Any], all_servers: bool) -> bool:
    """Whether a server is to be recovered: its `HA_Enabled` metadata says so (any case
    of "true"), or the segment takes all."""
    return all_servers or str(metadata.get(HA_ENABLED_KEY, "")).strip().lower() == "true"


def priority(metadata: dict[str, Any]) -> int:
    """A server's restart priority: `HA_Priority` as an integer, lower first; without
    one (or not a number) it comes after all that have one."""
    try:
        return int(str(metadata.get(HA_PRIORITY_KEY, "")).strip())
    except ValueError:
        return 1 << 30


@dataclass(slots=True)
class HaNotification:
    """A Masakari notification: what a masakari-monitor reported about a host of a
    segment, and what became of it.

    A notification that reports a fault became an event with the notification's own id
    (`event_id`): the fault that event opened or joined tells its status and progress.
    Others carry their status themselves (`ignored`, or the outcome of a VIM call)."""

    type: str
    hostname: str
    generated_time: float
    payload: dict[str, Any]
    status: NotificationStatus = "new"
    source_host_uuid: str = ""
    failover_segment_uuid: str = ""
    event_id: str | None = None
    message: str | None = None
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None

    @property
    def settled(self) -> bool:
        return self.status in SETTLED_STATUSES
