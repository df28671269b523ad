"""A fault: one (type, hostname) from its first report to its clearance, with its timeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from opendoctor.core.model import CHECKPOINTS, resource_key


@dataclass(slots=True)
class RecoveryItem:
    """What happened to one server during recovery."""

    server_id: str
    name: str
    from_host: str
    to_host: str | None = None
    started: float = 0.0  # the first call to the VIM for it (0: none yet)
    finished: float | None = None
    result: str = "pending"  # pending | ok | failed | cancelled
    error: str | None = None
    requested: float | None = None  # when recovery took it on
    serving: float | None = None  # when its application answered again
    attempts: int = 0  # calls to the VIM (each to another target host)
    method: str | None = None  # the recovery method it was recovered by
    # What was last done to it: restart (in place), migrate or evacuate (elsewhere); None
    # where the recovery that made the record does not say.
    action: str | None = None


@dataclass(slots=True)
class Fault:
    id: str
    type: str
    hostname: str
    started: float
    status: str = "active"  # active | cleared
    cleared: float | None = None
    trace: dict[str, float] = field(default_factory=dict)
    affected: list[str] = field(default_factory=list)
    recovery: list[RecoveryItem] = field(default_factory=list)
    repeats: int = 0
    instance_id: str | None = None
    # Event types that currently say the resource is down; the fault clears when none do.
    signals: list[str] = field(default_factory=list)
    # Times the resource went down again while the fault was held (or soon after the
    # previous fault on it cleared); each doubles the hold-down.
    flaps: int = 0
    # Set while the resource is back but not yet believed: the fault clears then.
    held_until: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return resource_key(self.hostname, self.instance_id)

    def brief(self) -> dict[str, Any]:
        """What a workflow the fault sets off is given as its `fault` input."""
        return {
            "id": self.id,
            "type": self.type,
            "hostname": self.hostname,
            "instance_id": self.instance_id,
            "started": self.started,
        }

    def mark(self, checkpoint: str, at: float) -> None:
        # Keep the first time a checkpoint was reached: later repeats say nothing new.
        self.trace.setdefault(checkpoint, at)

    def timeline(self) -> list[dict[str, Any]]:
        """Checkpoints in order, with seconds since detection (T01) where known."""
        t01 = self.trace.get("T01")
        rows = []
        for name in sorted(self.trace):
            at = self.trace[name]
            rows.append(
                {
                    "checkpoint": name,
                    "label": CHECKPOINTS.get(name, name),
                    "at": at,
                    "since_detection": None if t01 is None else at - t01,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timeline"] = self.timeline()
        return data
