"""Shared test data for the alarm tests."""

from __future__ import annotations

from typing import Any

from opendoctor.core.alarms import Alarm
from opendoctor.core.model import TRAIT_STRING, NotificationEvent, Trait
from opendoctor.notifier.rules import AlarmBody

PROJECT_A = {"X-Project-Id": "project-a", "X-User-Id": "user-a"}
PROJECT_B = {"X-Project-Id": "project-b", "X-User-Id": "user-b"}
ADMIN = {"X-Project-Id": "admin-project", "X-User-Id": "admin", "X-Roles": "member,admin"}

INSTANCE = "6a8a4c7b-0f3e-4a8e-9e44-3d2b4b1c9f00"


def alarm_body(**overrides: Any) -> dict[str, Any]:
    """The alarm a VNF manager registers for one VM (DESIGN.md §5)."""
    body: dict[str, Any] = {
        "name": "vm-failure",
        "type": "event",
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {"field": "traits.instance_id", "op": "eq", "value": INSTANCE, "type": ""},
                {"field": "traits.state", "op": "eq", "value": "error"},
            ],
        },
        "alarm_actions": ["http://consumer.example:12346/failure"],
        "repeat_actions": False,
        "severity": "critical",
    }
    body.update(overrides)
    return body


def make_alarm(
    event_type: str = "compute.instance.update",
    query: list[dict[str, Any]] | None = None,
    *,
    alarm_id: str = "alarm-1",
    project_id: str = "project-a",
    enabled: bool = True,
) -> Alarm:
    body = AlarmBody.model_validate(
        {
            "name": alarm_id,
            "type": "event",
            "enabled": enabled,
            "event_rule": {"event_type": event_type, "query": query or []},
        }
    )
    return body.to_alarm(alarm_id, project_id, "user", "insufficient data", 1_700_000_000.0)


def make_event(
    event_type: str = "compute.instance.update",
    *,
    project: str | None = "project-a",
    **traits: tuple[int, Any],
) -> NotificationEvent:
    """An event with explicitly typed traits: name=(type code, value), of `project`
    (make_alarm's) unless the traits name one or `project` is None."""
    if project is not None and "project_id" not in traits and "tenant_id" not in traits:
        traits["project_id"] = (TRAIT_STRING, project)
    return NotificationEvent(
        event_type=event_type,
        traits={name: Trait(name, code, value) for name, (code, value) in traits.items()},
    )
