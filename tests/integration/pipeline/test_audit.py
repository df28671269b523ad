"""The audit trail: who changed alarms, templates and topology, readable by admins."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.api.templates import EXAMPLE_TEMPLATE
from tests.integration.pipeline.conftest import (
    ADMIN,
    PROJECT_A,
    PROJECT_B,
    Running,
    alarm_for,
    as_project,
    host_down,
)
from tests.live import live_api

VM1 = "00000000-0000-0000-0000-000000000001"  # project-a's


async def trail(r: Running, **params: Any) -> list[dict[str, Any]]:
    resp = await r.client.get("/v1/audit", headers=ADMIN, params=params)
    assert resp.status_code == 200, resp.text
    entries: list[dict[str, Any]] = resp.json()
    return entries


def summary(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["method"], e["route"], e["status"], e["project_id"], e["user_id"], e["target"])
        for e in entries
    ]


async def test_every_change_says_who_made_it_and_what_it_was_answered(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    client = running.client
    a, b = as_project(PROJECT_A), as_project(PROJECT_B)
    created = await client.post(
        "/v2/alarms", json=alarm_for(VM1, "https://vnfm.example"), headers=a
    )
    assert created.status_code == 201, created.text
    alarm_id = created.json()["alarm_id"]
    # Another project's change is refused (answered as if the alarm did not exist).
    assert (await client.delete(f"/v2/alarms/{alarm_id}", headers=b)).status_code == 404
    yaml = {**ADMIN, "content-type": "application/yaml"}
    assert (await client.post("/v1/templates", headers=yaml, content=EXAMPLE_TEMPLATE)).is_success
    topology = {"entities": [{"type": "switch", "id": "tor-9", "state": "up"}], "relations": []}
    assert (await client.post("/v1/topology", json=topology, headers=ADMIN)).is_success
    assert (await client.delete("/v1/topology/switch:tor-9", headers=ADMIN)).status_code == 204
    assert (await client.delete(f"/v2/alarms/{alarm_id}", headers=a)).status_code == 204
    # Monitors' events are the event store's to record; reading changes nothing.
    assert (await client.put("/events", json=[host_down("compute3")])).status_code == 202
    assert (await client.get("/v2/alarms", headers=a)).status_code == 200
    # A caller the API cannot identify leaves a log line, not a row.
    with caplog.at_level(logging.INFO, logger="opendoctor.audit"):
        assert (await client.post("/v2/alarms", json={})).status_code == 401
    assert any("audit POST /v2/alarms 401" in r.getMessage() for r in caplog.records)

    entries = await trail(running)
    assert summary(entries) == [
        ("DELETE", "/v2/alarms/{alarm_id}", 204, PROJECT_A, "vnfm", None),
        ("DELETE", "/v1/topology/{key}", 204, "admin", None, None),
        ("POST", "/v1/topology", 200, "admin", None, "1 entities, 0 relations"),
        ("POST", "/v1/templates", 201, "admin", None, "host_watch"),
        ("DELETE", "/v2/alarms/{alarm_id}", 404, PROJECT_B, "vnfm", None),
        ("POST", "/v2/alarms", 201, PROJECT_A, "vnfm", alarm_id),
    ]
    assert entries[0]["path"] == f"/v2/alarms/{alarm_id}"
    assert entries[1]["path"] == "/v1/topology/switch:tor-9"
    assert entries[3]["roles"] == ["admin"] and entries[0]["roles"] == []
    assert all(e["peer"] and e["time"] and e["id"] for e in entries)

    # Filters and pages.
    mine = await trail(running, project_id=PROJECT_A)
    assert [e["id"] for e in mine] == [entries[0]["id"], entries[5]["id"]]
    first = await trail(running, limit=2)
    rest = await trail(running, limit=10, marker=first[-1]["id"])
    assert first + rest == entries
    assert await trail(running, since="2999-01-01T00:00:00Z") == []


async def test_only_admins_read_the_trail(running: Running) -> None:
    resp = await running.client.get("/v1/audit", headers=as_project(PROJECT_A))
    assert resp.status_code == 403
    assert resp.json()["error"]["errors"][0]["field"] == "X-Roles"
    assert (await running.client.get("/v1/audit?limit=0", headers=ADMIN)).status_code == 400
    # Past what the database's integers hold (Schemathesis found this one).
    huge = await running.client.get(f"/v1/audit?marker={2**63}", headers=ADMIN)
    assert huge.status_code == 400 and huge.json()["error"]["errors"][0]["field"] == "marker"


def test_the_trail_through_a_real_server(tmp_path: Path) -> None:
    # The identity reaches the trail through the ASGI scope a real server builds.
    with live_api(tmp_path) as url, httpx.Client(base_url=url) as client:
        body = alarm_for(VM1, "https://vnfm.example")
        headers = {**as_project(PROJECT_A), "X-Openstack-Request-Id": "req-1234"}
        assert client.post("/v2/alarms", json=body, headers=headers).status_code == 201
        entries = client.get("/v1/audit", headers=ADMIN).json()
    assert [(e["project_id"], e["request_id"], e["peer"]) for e in entries] == [
        (PROJECT_A, "req-1234", "127.0.0.1")
    ]
