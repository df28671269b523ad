"""A maintenance notice as the VNF manager receives it: an Aodh alarm callback on
`maintenance.scheduled` (DESIGN §5), read the way Doctor's sample app manager read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from opendoctor.core.maintenance import (
    INSTANCE_ACTION_DONE,
    INSTANCE_ACTIONS,
    LIVE_MIGRATE,
    MAINTENANCE,
    MAINTENANCE_COMPLETE,
    MIGRATE,
    OWN_ACTION,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    PROJECT_STATES,
    SCALE_IN,
)

EVENT_TYPE = "maintenance.scheduled"

__all__ = [
    "ACTIONS",
    "INSTANCE_ACTION_DONE",
    "LIVE_MIGRATE",
    "MAINTENANCE",
    "MAINTENANCE_COMPLETE",
    "MIGRATE",
    "OWN_ACTION",
    "PLANNED_MAINTENANCE",
    "PREPARE_MAINTENANCE",
    "SCALE_IN",
    "STATES",
]

# The states and actions as the service names them (DESIGN §5): one list, not two.
STATES = PROJECT_STATES
ACTIONS = INSTANCE_ACTIONS


class NoticeError(ValueError):
    """The callback is not a maintenance notice this manager can read."""


@dataclass(frozen=True, slots=True)
class Notice:
    state: str
    session_id: str
    traits: dict[str, Any]  # decoded: lists and dicts are Python values again
    received: float
    message_id: str  # the event's, or the delivery's request id: the same for a redelivery


def decode_trait(value: Any) -> Any:
    """A trait value as its sender meant it: lists and dicts travel as text.

    Only text that starts like a list or a dict is decoded: a URL (an IPv6 one has
    brackets inside) and a time (`actions_at`, which YAML would turn into a datetime) stay
    text. JSON first; YAML as Doctor's app manager did, for senders that write Python's
    repr (single quotes)."""
    if not isinstance(value, str) or value.lstrip()[:1] not in ("[", "{"):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def parse_notice(body: Any, received: float, request_id: str = "") -> Notice:
    if not isinstance(body, dict):
        raise NoticeError("the callback body is not a JSON object")
    reason = body.get("reason_data")
    event = reason.get("event") if isinstance(reason, dict) else None
    if not isinstance(event, dict):
        raise NoticeError("no reason_data.event: not an event alarm's callback")
    event_type = event.get("event_type", EVENT_TYPE)
    if event_type != EVENT_TYPE:
        raise NoticeError(f"event type {event_type!r} is not {EVENT_TYPE}")
    raw = event.get("traits")
    if not isinstance(raw, list):
        raise NoticeError("reason_data.event.traits is not a list")
    traits: dict[str, Any] = {}
    for trait in raw:
        if not (isinstance(trait, list) and len(trait) == 3 and isinstance(trait[0], str)):
            raise NoticeError(f"a trait is not [name, type, value]: {str(trait)[:80]}")
        traits[trait[0]] = decode_trait(trait[2])
    state = traits.get("state")
    if state not in STATES:
        raise NoticeError(f"state {str(state)[:40]!r} is not one of {', '.join(STATES)}")
    session_id = traits.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise NoticeError("no session_id trait")
    message_id = event.get("message_id")
    return Notice(
        state=state,
        session_id=session_id,
        traits=traits,
        received=received,
        message_id=message_id if isinstance(message_id, str) and message_id else request_id,
    )
