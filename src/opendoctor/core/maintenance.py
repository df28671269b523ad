"""Planned maintenance: sessions, what each host and instance went through, and the
owners' constraints (DESIGN §5, Fenix's API).

A session is one document: the engine rewrites it whole after every step, so what a
restart finds is what the last step left, and `GET /v1/maintenance/{id}/detail` shows
the same thing the engine reads. Times are epoch seconds (UTC).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Session states, in the order a session goes through them (Fenix's default workflow).
MAINTENANCE = "MAINTENANCE"
SCALE_IN = "SCALE_IN"
PREPARE_MAINTENANCE = "PREPARE_MAINTENANCE"
START_MAINTENANCE = "START_MAINTENANCE"
PLANNED_MAINTENANCE = "PLANNED_MAINTENANCE"
MAINTENANCE_COMPLETE = "MAINTENANCE_COMPLETE"
MAINTENANCE_DONE = "MAINTENANCE_DONE"
MAINTENANCE_FAILED = "MAINTENANCE_FAILED"
MAINTENANCE_CANCELLED = "MAINTENANCE_CANCELLED"
SESSION_STATES = (
    MAINTENANCE,
    SCALE_IN,
    PREPARE_MAINTENANCE,
    START_MAINTENANCE,
    PLANNED_MAINTENANCE,
    MAINTENANCE_COMPLETE,
    MAINTENANCE_DONE,
    MAINTENANCE_FAILED,
    MAINTENANCE_CANCELLED,
)
ENDED = frozenset({MAINTENANCE_DONE, MAINTENANCE_FAILED, MAINTENANCE_CANCELLED})

# What a project is asked in (the `state` trait of `maintenance.scheduled`), and may
# answer `ACK_<state>` or `NACK_<state>` to.
INSTANCE_ACTION_DONE = "INSTANCE_ACTION_DONE"
PROJECT_STATES = (
    MAINTENANCE,
    SCALE_IN,
    PREPARE_MAINTENANCE,
    PLANNED_MAINTENANCE,
    INSTANCE_ACTION_DONE,
    MAINTENANCE_COMPLETE,
)
# Host-level notices (event type `maintenance.host`, to the infrastructure's alarms).
IN_MAINTENANCE = "IN_MAINTENANCE"

# What an owner may ask for each of its instances on a host to be emptied.
MIGRATE = "MIGRATE"
LIVE_MIGRATE = "LIVE_MIGRATE"
OWN_ACTION = "OWN_ACTION"
INSTANCE_ACTIONS = (MIGRATE, LIVE_MIGRATE, OWN_ACTION)

# A host's progress through a session.
HOST_WAITING = "waiting"
HOST_DRAINING = "draining"
HOST_IN_MAINTENANCE = "in_maintenance"
HOST_RETURNED = "returned"
HOST_FAILED = "failed"
HOST_STATES = (HOST_WAITING, HOST_DRAINING, HOST_IN_MAINTENANCE, HOST_RETURNED, HOST_FAILED)

# An instance's progress: asked about, moving, moved (or gone), or failed to move.
INSTANCE_WAITING = "waiting"
INSTANCE_MOVING = "moving"
INSTANCE_DONE = "done"
INSTANCE_FAILED = "failed"


def new_session_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class ProjectProgress:
    """One owner's part in a session: what it was last asked and what it answered."""

    project_id: str
    asked: str | None = None  # the project state last sent
    asked_at: float | None = None
    deadline: float | None = None  # no answer by then: the default applies
    reply: str | None = None  # ACK_<asked> / NACK_<asked>, or None
    replied_at: float | None = None
    defaulted: bool = False  # the last state went on without its answer
    defaults: list[str] = field(default_factory=list)  # every state it did not answer in time
    instance_actions: dict[str, str] = field(default_factory=dict)
    instance_ids: list[str] = field(default_factory=list)  # what it says it has (MAINTENANCE)
    about: list[str] = field(default_factory=list)  # the instances the last notice is about


@dataclass(slots=True)
class HostProgress:
    name: str
    state: str = HOST_WAITING
    started: float | None = None
    finished: float | None = None
    version_before: str | None = None
    version_after: str | None = None
    error: str | None = None


@dataclass(slots=True)
class InstanceProgress:
    instance_id: str
    project_id: str
    host: str  # where it was when the session asked about it
    name: str = ""
    group_id: str | None = None
    action: str | None = None  # as agreed (the owner's, or the default)
    state: str = INSTANCE_WAITING
    to_host: str | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    # Its earlier moves in this session (moved onto a host the session emptied later).
    earlier: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "to_host": self.to_host,
            "action": self.action,
            "started": self.started,
            "finished": self.finished,
        }


@dataclass(slots=True)
class Session:
    hosts: list[str]
    maintenance_at: float
    session_id: str = field(default_factory=new_session_id)
    state: str = MAINTENANCE
    workflow: str = "default"
    metadata: dict[str, Any] = field(default_factory=dict)
    # Host actions (Fenix's action plugins): [{"plugin": "power_cycle", "metadata": {}}].
    actions: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    ended: float | None = None
    paused: bool = False  # by the admin (PUT), or `waiting` says why not going on
    waiting: str | None = None  # why the engine is not going on now (a fault, a reply)
    cancel_requested: bool = False
    error: str | None = None
    current_host: str | None = None
    projects: dict[str, ProjectProgress] = field(default_factory=dict)
    host_progress: dict[str, HostProgress] = field(default_factory=dict)
    instances: dict[str, InstanceProgress] = field(default_factory=dict)
    # The session's own log: (time, what happened), for the timeline people read.
    log: list[tuple[float, str]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in ENDED

    def note(self, what: str, at: float | None = None) -> None:
        self.log.append((time.time() if at is None else at, what))
        del self.log[:-500]  # bounded: a long session keeps its latest entries

    def percent_done(self) -> int:
        if self.state == MAINTENANCE_DONE:
            return 100
        if not self.host_progress:
            return 0
        returned = sum(1 for h in self.host_progress.values() if h.state == HOST_RETURNED)
        return int(100 * returned / len(self.host_progress))

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["log"] = [list(item) for item in self.log]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Session:
        data = dict(doc)
        data["projects"] = {k: ProjectProgress(**v) for k, v in data["projects"].items()}
        data["host_progress"] = {k: HostProgress(**v) for k, v in data["host_progress"].items()}
        data["instances"] = {k: InstanceProgress(**v) for k, v in data["instances"].items()}
        data["log"] = [(float(t), str(w)) for t, w in data.get("log", [])]
        return cls(**data)


@dataclass(slots=True)
class InstanceGroupConstraints:
    """`/v1/instance_group/{group_id}`: how much of a group may be hurt at once."""

    group_id: str
    project_id: str
    group_name: str = ""
    anti_affinity_group: bool = False
    max_instances_per_host: int = 0  # 0: no limit
    max_impacted_members: int = 1  # members moving (or on a host being emptied) at once
    recovery_time: int = 0  # seconds a member needs after a move before the next may go
    resource_mitigation: bool = False
    updated: float = field(default_factory=time.time)


@dataclass(slots=True)
class InstanceConstraints:
    """`/v1/instance/{instance_id}`: how one instance may be moved."""

    instance_id: str
    project_id: str
    group_id: str | None = None
    instance_name: str = ""
    migration_type: str = MIGRATE  # the default action when its owner does not say
    max_interruption_time: int = 0  # seconds; 0: no limit
    resource_mitigation: bool = False
    lead_time: int = 0  # seconds the owner needs before its instance is moved
    updated: float = field(default_factory=time.time)
