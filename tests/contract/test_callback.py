"""The alarm callback is the contract every consumer is written against (docs/api.md,
DESIGN.md §5): checked field by field, type by type, on what real consumer processes
received over HTTP and over AMQP, raw (before any parsing of the sample consumer's own).

A consumer built for Aodh reads `body["reason_data"]["event"]["traits"]` as
`{name: value for name, type, value in traits}` and dispatches on `alarm_name`,
`severity` and `current`; a missing key or a value of another type breaks it.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.stack import Stack, owner, running_stack
from tests.amqp.conftest import Names
from tests.amqp.conftest import amqp_url as amqp_url  # a fixture of this test too
from tests.amqp.conftest import names as names  # a fixture of this test too
from tests.conftest import eventually
from tests.faults.owners import arrivals
from tests.pipeline.conftest import host_down

SPEC = LabSpec(
    hosts=2,
    vms=6,
    projects=["project-a", "project-b"],
    ip_prefix="127.81",
    vm_mode="inline",
    heartbeat=False,
)
HOST = "compute1"
SEVERITIES = ["low", "moderate", "critical"]
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
ROOT_CAUSE_KEYS = {
    "fault_id",
    "event_type",
    "hostname",
    "alarm_id",
    "alarm_type",
    "alarm_resource",
    "cause_alarm_id",
}


def alarm(server: dict[str, Any], severity: str, actions: list[str]) -> dict[str, Any]:
    return {
        "name": f"contract-{server['name']}",
        "type": "event",
        "severity": severity,
        "alarm_actions": actions,
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {"field": "traits.instance_id", "op": "eq", "value": server["id"]},
                {"field": "traits.state", "op": "eq", "value": "error"},
            ],
        },
    }


def parse_generated(text: str) -> float:
    """`generated` as Aodh writes it: ISO 8601 in UTC, microseconds, no zone suffix."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def check_trait(trait: Any) -> None:
    assert isinstance(trait, list) and len(trait) == 3, trait
    name, code, value = trait
    assert isinstance(name, str) and name, trait
    assert type(code) is int and code in TRAIT_TYPES, f"type code of {trait}"
    assert type(value) is TRAIT_TYPES[code], f"value of {trait} is not of type code {code}"
    if code == 4:
        parse_generated(value)


async def test_the_callback_body_and_headers_are_exactly_the_documented_ones(
    tmp_path: Path, amqp_url: str, names: Names
) -> None:
    exchange = names.exchange("alarms")

    def topic(project: str) -> str:
        return f"{amqp_url.rstrip('/')}/?exchange={exchange}&routing_key=alarm.{project}"

    env = {"OPENDOCTOR_MONITOR__ENABLED": "false", "OPENDOCTOR_RECOVERY__ENABLED": "false"}
    async with running_stack(
        SPEC, tmp_path, env, consumer_args=lambda p: ["--amqp", topic(p)]
    ) as s:
        servers = await s.get("/v1/servers")
        registered = await register(s, servers, topic)
        victims = {v["id"]: v for v in servers if v["host"] == HOST}
        assert victims and len(victims) < len(servers)

        before = time.time()
        resp = await s.http.put(s.api + "/events", json=[host_down(HOST)])
        assert resp.status == 202, resp.body

        # Two actions per alarm: every victim's owner gets one callback on each channel.
        # Read once the service has recorded every one delivered: a repeat would show.
        async def delivered() -> dict[str, Any] | None:
            faults = [f for f in await s.get("/v1/faults") if f["hostname"] == HOST]
            if not faults:
                return None
            fault: dict[str, Any] = await s.get(f"/v1/faults/{faults[0]['id']}")
            sent = fault["notifications"]
            done = len(sent) == 2 * len(victims) and {n["status"] for n in sent} == {"delivered"}
            return fault if done else None

        fault = await eventually(delivered, timeout=30, what="every callback delivered")
        got = await arrivals(s)

    seen: dict[tuple[str, str], int] = {}
    for project, items in got.items():
        for arrival in items:
            server_id = check_callback(arrival, registered, fault, before)
            assert victims[server_id]["project_id"] == project, "told another project's owner"
            channel = "amqp" if arrival["path"].startswith("amqp:") else "http"
            if channel == "amqp":
                assert arrival["path"] == f"amqp:{exchange}/alarm.{project}"
            else:
                assert arrival["path"] == "/failure"
            seen[(server_id, channel)] = seen.get((server_id, channel), 0) + 1
    # Exactly one callback per victim and channel; nobody else's server.
    assert seen == {(v, c): 1 for v in victims for c in ("http", "amqp")}
    # A notification's request id is its own: one per action URL, none shared.
    ids = [a["request_id"] for items in got.values() for a in items]
    assert len(set(ids)) == len(ids)


async def register(
    s: Stack, servers: list[dict[str, Any]], topic: Any
) -> dict[str, dict[str, Any]]:
    """An alarm per server with an HTTP and an AMQP action, severities taking turns;
    returns alarm id -> what was registered (as the API answered it)."""
    registered = {}
    for i, server in enumerate(sorted(servers, key=lambda v: v["name"])):
        project = server["project_id"]
        actions = [s.consumers[project].ready + "/failure", topic(project)]
        body = alarm(server, SEVERITIES[i % len(SEVERITIES)], actions)
        resp = await s.http.post(s.api + "/v2/alarms", json=body, headers=owner(project))
        assert resp.status == 201, resp.body
        created = resp.json()
        registered[created["alarm_id"]] = {**created, "server": server}
    return registered


def check_callback(
    arrival: dict[str, Any],
    registered: dict[str, dict[str, Any]],
    fault: dict[str, Any],
    before: float,
) -> str:
    """Every field of one raw arrival against the contract; returns its server's id."""
    assert arrival["content_type"] == "application/json"
    request_id = arrival["request_id"]
    assert request_id.startswith("req-") and UUID.match(request_id[4:]), request_id

    body = arrival["body"]
    assert isinstance(body, dict) and set(body) == CALLBACK_KEYS, sorted(body)
    alarm_id = body["alarm_id"]
    assert isinstance(alarm_id, str) and alarm_id in registered, alarm_id
    mine = registered[alarm_id]
    server = mine["server"]
    assert body["alarm_name"] == mine["name"] == f"contract-{server['name']}"
    assert body["severity"] == mine["severity"] and body["severity"] in SEVERITIES
    assert body["previous"] == "insufficient data"
    assert body["current"] == "alarm"

    data = body["reason_data"]
    assert isinstance(data, dict) and set(data) == {"type", "event", "root_cause"}, sorted(data)
    assert data["type"] == "event"
    event = data["event"]
    assert isinstance(event, dict), event
    assert set(event) == {"message_id", "event_type", "generated", "traits"}, sorted(event)
    assert isinstance(event["message_id"], str) and UUID.match(event["message_id"])
    assert event["event_type"] == "compute.instance.update"
    assert isinstance(event["generated"], str)
    assert before - 1.0 <= parse_generated(event["generated"]) <= arrival["arrived"] + 1.0
    assert body["reason"] == (
        f"Event <id={event['message_id']},event_type=compute.instance.update> "
        f"hits the query of alarm {mine['name']}."
    )

    traits = event["traits"]
    assert isinstance(traits, list)
    for trait in traits:
        check_trait(trait)
    names = [t[0] for t in traits]
    assert len(names) == len(set(names)), f"a trait given twice: {names}"
    assert {t[0]: (t[1], t[2]) for t in traits} == {
        "instance_id": (1, server["id"]),
        "state": (1, "error"),
        "host": (1, HOST),
        "project_id": (1, server["project_id"]),
        "tenant_id": (1, server["project_id"]),
    }

    cause = data["root_cause"]
    assert isinstance(cause, dict) and set(cause) == ROOT_CAUSE_KEYS, sorted(cause)
    assert cause == {
        "fault_id": fault["id"],
        "event_type": "compute.host.down",
        "hostname": HOST,
        "alarm_id": fault["id"],
        "alarm_type": "compute.host.down",
        "alarm_resource": f"host:{HOST}",
        "cause_alarm_id": fault["id"],
    }
    return str(server["id"])
