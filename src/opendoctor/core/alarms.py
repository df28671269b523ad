"""Alarms as the notification path and the store share them: the compiled alarm, a
change of its state, and the rows of its history (Aodh's alarm and alarm_history)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from opendoctor.core.model import new_id
from opendoctor.core.terms import Term

CREATION = "creation"
RULE_CHANGE = "rule change"
STATE_TRANSITION = "state transition"
DELETION = "deletion"


@dataclass(slots=True)
class Alarm:
    """An event alarm as the notification path sees it."""

    alarm_id: str
    name: str
    description: str
    type: str
    project_id: str
    user_id: str
    enabled: bool
    state: str
    state_reason: str
    state_timestamp: float
    timestamp: float
    severity: str
    repeat_actions: bool
    alarm_actions: list[str]
    ok_actions: list[str]
    insufficient_data_actions: list[str]
    event_type: str
    query: list[Term]

    def rule(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "query": [t.to_dict() for t in self.query]}


@dataclass(slots=True)
class Transition:
    """One alarm changing state, as the notification path (or the API) decided it."""

    alarm_id: str
    previous: str
    current: str
    reason: str
    reason_data: dict[str, Any]
    timestamp: float
    project_id: str  # who made the change (the alarm's own project for evaluations)
    user_id: str
    severity: str
    on_behalf_of: str | None = None  # the alarm's project; None: the same as project_id


@dataclass(frozen=True, slots=True)
class Change:
    """A history row, as another process takes it up."""

    event_id: str
    alarm_id: str
    timestamp: float
    type: str
    detail: str  # JSON

    def new_state(self) -> tuple[str, str] | None:
        """(state, reason) of a state transition; None for other changes."""
        if self.type != STATE_TRANSITION:
            return None
        detail = orjson.loads(self.detail)
        return str(detail["state"]), str(detail.get("transition_reason", ""))


@dataclass(slots=True)
class HistoryEntry:
    """One row of an alarm's history. `detail` is stored as a JSON string."""

    alarm_id: str
    type: str
    detail: dict[str, Any]
    timestamp: float
    project_id: str  # who made the change
    user_id: str
    on_behalf_of: str  # the alarm's project
    severity: str
    event_id: str = field(default_factory=new_id)
