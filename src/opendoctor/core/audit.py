"""The audit trail: who asked to change what, when, and what they were answered."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from opendoctor.core.model import iso


@dataclass(slots=True)
class AuditEntry:
    at: float
    method: str
    path: str
    route: str  # the route's template, e.g. /v2/alarms/{alarm_id}; the path if none matched
    status: int
    project_id: str | None = None  # None: the caller was not identified (say, a 401)
    user_id: str | None = None
    roles: list[str] = field(default_factory=list)
    target: str | None = None  # what the change was about, when the path does not say
    request_id: str | None = None
    peer: str | None = None
    id: int | None = None  # given by the store

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = iso(self.at)
        return data


@dataclass(frozen=True, slots=True)
class AuditQuery:
    project_id: str | None = None
    user_id: str | None = None
    since: float | None = None
    marker: int | None = None  # the last id of the page before: older entries follow
    limit: int = 100
