"""The alarm callback contract (docs/api.md, DESIGN.md §5), checked on one raw arrival.

Shared by the contract test on real consumer processes and by the pipeline tests, so a
field that goes missing or changes type fails wherever a callback is looked at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Aodh's trait type codes, and the JSON type a value of each code has.
TRAIT_TYPES: dict[int, type] = {1: str, 2: int, 3: float, 4: str}
CALLBACK_KEYS = {
    "alarm_name",
    "alarm_id",
    "severity",
    "previous",
    "current",
    "reason",
    "reason_data",
}
EVENT_KEYS = {"message_id", "event_type", "generated", "traits"}


def parse_generated(text: str) -> float:
    """A time as Aodh writes it: ISO 8601 in UTC, microseconds, no zone suffix."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def check_trait(trait: Any) -> None:
    assert isinstance(trait, list) and len(trait) == 3, f"a trait is [name, type, value]: {trait}"
    name, code, value = trait
    assert isinstance(name, str) and name, trait
    assert type(code) is int and code in TRAIT_TYPES, f"type code of {trait}"
    assert type(value) is TRAIT_TYPES[code], f"value of {trait} is not of type code {code}"
    if code == 4:
        parse_generated(value)


def server_traits(server_id: str, host: str, project: str) -> dict[str, tuple[int, Any]]:
    """The traits of `compute.instance.update` for a server set to error (type code, value)."""
    return {
        "instance_id": (1, server_id),
        "state": (1, "error"),
        "host": (1, host),
        "project_id": (1, project),
        "tenant_id": (1, project),
    }


def check_callback(
    arrival: dict[str, Any],
    *,
    alarm: dict[str, Any],
    traits: dict[str, tuple[int, Any]],
    root_cause: dict[str, Any],
    window: tuple[float, float],
    event_type: str = "compute.instance.update",
    previous: str = "insufficient data",
) -> None:
    """Every header and field of one raw arrival (the sample consumer's `/arrivals` entry)
    against the contract: `alarm` is the alarm as the API returned it, `traits` the
    expected traits, `window` the times between which the event was generated."""
    assert arrival["content_type"] == "application/json"
    request_id = arrival["request_id"]
    assert request_id.startswith("req-") and UUID.match(request_id[4:]), request_id

    body = arrival["body"]
    assert isinstance(body, dict) and set(body) == CALLBACK_KEYS, sorted(body)
    assert body["alarm_id"] == alarm["alarm_id"]
    assert body["alarm_name"] == alarm["name"]
    assert body["severity"] == alarm["severity"]
    assert body["severity"] in ("low", "moderate", "critical")
    assert body["previous"] == previous
    assert body["current"] == "alarm"

    data = body["reason_data"]
    assert isinstance(data, dict) and set(data) == {"type", "event", "root_cause"}, sorted(data)
    assert data["type"] == "event"
    event = data["event"]
    assert isinstance(event, dict) and set(event) == EVENT_KEYS, event
    assert isinstance(event["message_id"], str) and UUID.match(event["message_id"]), event
    assert event["event_type"] == event_type
    assert isinstance(event["generated"], str), event
    assert window[0] <= parse_generated(event["generated"]) <= window[1], event["generated"]
    assert body["reason"] == (
        f"Event <id={event['message_id']},event_type={event_type}> "
        f"hits the query of alarm {alarm['name']}."
    )

    assert isinstance(event["traits"], list), event
    for trait in event["traits"]:
        check_trait(trait)
    names = [t[0] for t in event["traits"]]
    assert len(names) == len(set(names)), f"a trait given twice: {names}"
    assert {t[0]: (t[1], t[2]) for t in event["traits"]} == traits

    assert data["root_cause"] == root_cause
