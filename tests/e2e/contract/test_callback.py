"""The alarm callback is the contract every consumer is written against (docs/api.md,
DESIGN.md §5): checked field by field, type by type, on what real consumer processes
received over HTTP and over AMQP, raw (before any parsing of the sample consumer's own).

A consumer built for Aodh reads `body["reason_data"]["event"]["traits"]` as
`{name: value for name, type, value in traits}` and dispatches on `alarm_name`,
`severity` and `current`; a missing key or a value of another type breaks it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opendoctor.core.egress import address_of
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, owner, running_stack
from tests.conftest import eventually
from tests.e2e.contract.callback import check_callback, server_traits
from tests.e2e.faults.owners import arrivals
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.conftest import amqp_url as amqp_url  # a fixture of this test too
from tests.integration.amqp.conftest import names as names  # a fixture of this test too
from tests.integration.pipeline.conftest import host_down

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


async def test_the_callback_body_and_headers_are_exactly_the_documented_ones(
    tmp_path: Path, amqp_url: str, names: Names
) -> None:
    exchange = names.exchange("alarms")

    def topic(project: str) -> str:
        return f"{amqp_url.rstrip('/')}/?exchange={exchange}&routing_key=alarm.{project}"

    env = {"OPENDOCTOR_MONITOR__ENABLED": "false", "OPENDOCTOR_RECOVERY__ENABLED": "false"}
    async with running_stack(
        SPEC,
        tmp_path,
        env,
        consumer_args=lambda p: ["--amqp", topic(p)],
        egress_allow=[address_of(amqp_url)],
    ) as s:
        servers = await s.get("/v1/servers")
        registered = await register(s, servers, topic)
        victims = {v["id"]: v for v in servers if v["host"] == HOST}
        assert victims and len(victims) < len(servers)

        before = time.time()
        resp = await s.http.put(s.api + "/events", json=[host_down(HOST)], headers=s.monitor)
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
            server_id = check(arrival, registered, fault, before)
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


def check(
    arrival: dict[str, Any],
    registered: dict[str, dict[str, Any]],
    fault: dict[str, Any],
    before: float,
) -> str:
    """One raw arrival against the contract; returns the id of the server it is about."""
    alarm = registered[arrival["body"]["alarm_id"]]
    server = alarm["server"]
    check_callback(
        arrival,
        alarm=alarm,
        traits=server_traits(server["id"], HOST, server["project_id"]),
        root_cause={
            "fault_id": fault["id"],
            "event_type": "compute.host.down",
            "hostname": HOST,
            "alarm_id": fault["id"],
            "alarm_type": "compute.host.down",
            "alarm_resource": f"host:{HOST}",
            "cause_alarm_id": fault["id"],
        },
        window=(before - 1.0, arrival["arrived"] + 1.0),
    )
    return str(server["id"])
