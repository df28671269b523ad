"""The /v2/alarms API end to end: CRUD, state, history, filters, tenancy, restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from opendoctor.core.alarms import Transition
from opendoctor.core.model import NotificationEvent
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.index import AlarmIndex
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.db import Database
from tests.conftest import MONITOR

from .conftest import build_app
from .helpers import ADMIN, INSTANCE, PROJECT_A, PROJECT_B, alarm_body

ALARM_KEYS = {
    "alarm_id", "name", "description", "type", "enabled", "state", "state_reason",
    "state_timestamp", "timestamp", "severity", "repeat_actions", "alarm_actions",
    "ok_actions", "insufficient_data_actions", "event_rule", "project_id", "user_id",
    "time_constraints",
}  # fmt: skip


async def create(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> Any:
    resp = await client.post("/v2/alarms", json=alarm_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def test_create_returns_the_aodh_shape(client: httpx.AsyncClient) -> None:
    alarm = await create(client, PROJECT_A)
    assert set(alarm) == ALARM_KEYS
    assert alarm["type"] == "event"
    assert alarm["state"] == "insufficient data"
    assert alarm["enabled"] is True
    assert alarm["severity"] == "critical"
    assert alarm["project_id"] == "project-a"
    assert alarm["user_id"] == "user-a"
    assert alarm["time_constraints"] == []
    assert alarm["description"] == "Alarm when compute.instance.update event occurred."
    assert alarm["event_rule"] == {
        "event_type": "compute.instance.update",
        "query": [
            {"field": "traits.instance_id", "op": "eq", "value": INSTANCE, "type": ""},
            {"field": "traits.state", "op": "eq", "value": "error", "type": ""},
        ],
    }
    assert alarm["timestamp"] == alarm["state_timestamp"]
    assert len(alarm["timestamp"]) == len("2024-01-01T00:00:00.000000")


async def test_created_alarm_is_matched_by_the_index(
    client: httpx.AsyncClient, service: AlarmService
) -> None:
    alarm = await create(client, PROJECT_A)
    event = NotificationEvent.build(
        "compute.instance.update", instance_id=INSTANCE, state="error", project_id="project-a"
    )
    assert [a.alarm_id for a in service.index.match(event)] == [alarm["alarm_id"]]


async def test_get_list_put_delete(client: httpx.AsyncClient, service: AlarmService) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    assert (await client.get(url, headers=PROJECT_A)).json() == alarm
    listed = (await client.get("/v2/alarms", headers=PROJECT_A)).json()
    assert listed == [alarm]

    changed = alarm_body(name="renamed", severity="low", state="alarm")
    changed["event_rule"]["event_type"] = "compute.instance.*"
    resp = await client.put(url, json=changed, headers=PROJECT_A)
    assert resp.status_code == 200, resp.text
    updated = resp.json()
    assert updated["alarm_id"] == alarm["alarm_id"]
    assert (updated["name"], updated["severity"], updated["state"]) == ("renamed", "low", "alarm")
    assert updated["event_rule"]["event_type"] == "compute.instance.*"
    event = NotificationEvent.build(
        "compute.instance.delete", instance_id=INSTANCE, state="error", project_id="project-a"
    )
    assert [a.name for a in service.index.match(event)] == ["renamed"]

    resp = await client.delete(url, headers=PROJECT_A)
    assert resp.status_code == 204
    assert resp.content == b""
    assert (await client.get(url, headers=PROJECT_A)).status_code == 404
    assert (await client.delete(url, headers=PROJECT_A)).status_code == 404
    assert (await client.get("/v2/alarms", headers=PROJECT_A)).json() == []
    assert service.index.match(event) == []


async def test_put_without_state_keeps_the_state(client: httpx.AsyncClient) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    await client.put(f"{url}/state", json="alarm", headers=PROJECT_A)
    resp = await client.put(url, json=alarm_body(name="renamed"), headers=PROJECT_A)
    assert resp.json()["state"] == "alarm"


async def test_put_back_what_get_returned(client: httpx.AsyncClient) -> None:
    # aodhclient updates by sending the whole alarm it read, read-only fields included.
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    alarm["enabled"] = False
    resp = await client.put(url, json=alarm, headers=PROJECT_A)
    assert resp.status_code == 200, resp.text
    assert resp.json()["enabled"] is False


async def test_state_get_and_put(client: httpx.AsyncClient, service: AlarmService) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}/state"
    resp = await client.get(url, headers=PROJECT_A)
    assert resp.json() == "insufficient data"
    resp = await client.put(url, json="alarm", headers=PROJECT_A)
    assert (resp.status_code, resp.json()) == (200, "alarm")
    assert (await client.get(url, headers=PROJECT_A)).json() == "alarm"
    in_memory = service.index.get(alarm["alarm_id"])
    assert in_memory is not None and in_memory.state == "alarm"
    assert in_memory.state_reason == "Manually set via API"


async def test_bad_state_is_400_naming_state(client: httpx.AsyncClient) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}/state"
    headers = {**PROJECT_A, "content-type": "application/json"}
    for body in [b'"alarmed"', b'{"state": "ok"}', b"ok", b"", b'["ok"]', b"null"]:
        resp = await client.put(url, content=body, headers=headers)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["errors"][0]["field"] == "state"
    assert (await client.get(url, headers=PROJECT_A)).json() == "insufficient data"


async def test_history_records_every_kind_of_change(
    client: httpx.AsyncClient, service: AlarmService
) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    await client.put(url, json=alarm_body(name="renamed"), headers=PROJECT_A)
    await client.put(f"{url}/state", json="ok", headers=PROJECT_A)
    history = (await client.get(f"{url}/history", headers=PROJECT_A)).json()
    assert [h["type"] for h in history] == ["state transition", "rule change", "creation"]
    assert json.loads(history[0]["detail"]) == {
        "state": "ok",
        "transition_reason": "Manually set via API",
    }
    assert json.loads(history[1]["detail"]) == {"name": "renamed"}
    assert json.loads(history[2]["detail"])["alarm_id"] == alarm["alarm_id"]
    assert all(h["on_behalf_of"] == "project-a" for h in history)
    limited = (await client.get(f"{url}/history?limit=1", headers=PROJECT_A)).json()
    assert len(limited) == 1

    # A PUT that changes nothing writes nothing.
    current = (await client.get(url, headers=PROJECT_A)).json()
    await client.put(url, json=current, headers=PROJECT_A)
    assert len((await client.get(f"{url}/history", headers=PROJECT_A)).json()) == 3

    await client.delete(url, headers=PROJECT_A)
    stored = await service.store.history(alarm["alarm_id"])
    assert stored[0]["type"] == "deletion"


async def test_list_filters(client: httpx.AsyncClient) -> None:
    first = await create(client, PROJECT_A, name="first")
    second = await create(client, PROJECT_A, name="second", enabled=False, severity="low")

    async def names(params: list[tuple[str, str]]) -> list[str]:
        resp = await client.get("/v2/alarms", params=params, headers=PROJECT_A)
        assert resp.status_code == 200, resp.text
        return [a["name"] for a in resp.json()]

    assert await names([]) == ["second", "first"]  # newest first
    assert await names([("q.field", "name"), ("q.op", "eq"), ("q.value", "first")]) == ["first"]
    assert await names([("q.field", "enabled"), ("q.value", "false")]) == ["second"]
    assert await names([("q.field", "severity"), ("q.value", "critical")]) == ["first"]
    assert await names([("q.field", "alarm_id"), ("q.value", second["alarm_id"])]) == ["second"]
    assert await names([("q.field", "state"), ("q.value", "alarm")]) == []
    both = [("q.field", "type"), ("q.field", "enabled"), ("q.value", "event"), ("q.value", "1")]
    assert await names(both) == ["first"]
    assert first["alarm_id"] != second["alarm_id"]


async def test_bad_list_filters_are_400(client: httpx.AsyncClient) -> None:
    cases = [
        ([("q.field", "colour"), ("q.value", "red")], "q.field"),
        ([("q.field", "name"), ("q.op", "ne"), ("q.value", "x")], "q.op"),
        ([("q.field", "enabled"), ("q.value", "perhaps")], "q.value"),
        ([("q.field", "name")], "q"),
        ([("q.field", "name"), ("q.op", "eq"), ("q.op", "eq"), ("q.value", "x")], "q"),
    ]
    for params, field in cases:
        resp = await client.get("/v2/alarms", params=params, headers=PROJECT_A)
        assert resp.status_code == 400, params
        assert resp.json()["error"]["errors"][0]["field"] == field


async def test_other_projects_alarms_are_invisible(client: httpx.AsyncClient) -> None:
    alarm = await create(client, PROJECT_A)
    url = f"/v2/alarms/{alarm['alarm_id']}"
    assert (await client.get("/v2/alarms", headers=PROJECT_B)).json() == []
    for method, path, body in [
        ("GET", url, None),
        ("PUT", url, alarm_body(name="stolen")),
        ("DELETE", url, None),
        ("GET", f"{url}/state", None),
        ("PUT", f"{url}/state", "ok"),
        ("GET", f"{url}/history", None),
    ]:
        resp = await client.request(method, path, json=body, headers=PROJECT_B)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["error"]["status"] == 404
    unchanged = (await client.get(url, headers=PROJECT_A)).json()
    assert unchanged == alarm


async def test_admin_sees_and_modifies_every_project(client: httpx.AsyncClient) -> None:
    a = await create(client, PROJECT_A, name="of-a")
    await create(client, PROJECT_B, name="of-b")
    listed = (await client.get("/v2/alarms", headers=ADMIN)).json()
    assert sorted(x["name"] for x in listed) == ["of-a", "of-b"]
    only_a = [("q.field", "project_id"), ("q.value", "project-a")]
    assert [
        x["name"] for x in (await client.get("/v2/alarms", params=only_a, headers=ADMIN)).json()
    ] == ["of-a"]
    url = f"/v2/alarms/{a['alarm_id']}"
    assert (await client.get(url, headers=ADMIN)).status_code == 200
    resp = await client.put(url, json=alarm_body(name="fixed-by-admin"), headers=ADMIN)
    assert resp.status_code == 200
    assert resp.json()["project_id"] == "project-a"  # the owner does not change
    assert (await client.put(f"{url}/state", json="ok", headers=ADMIN)).json() == "ok"
    history = (await client.get(f"{url}/history", headers=ADMIN)).json()
    assert history[0]["project_id"] == "admin-project"
    assert history[0]["on_behalf_of"] == "project-a"
    assert (await client.delete(url, headers=ADMIN)).status_code == 204


async def test_only_an_admin_creates_for_another_project(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v2/alarms", json=alarm_body(project_id="project-b"), headers=PROJECT_A
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["errors"][0]["field"] == "project_id"
    resp = await client.post("/v2/alarms", json=alarm_body(user_id="someone"), headers=PROJECT_A)
    assert resp.status_code == 403
    assert resp.json()["error"]["errors"][0]["field"] == "user_id"
    same = await create(client, PROJECT_A, project_id="project-a")
    assert same["project_id"] == "project-a"
    by_admin = await create(client, ADMIN, project_id="project-b", user_id="user-b")
    assert (by_admin["project_id"], by_admin["user_id"]) == ("project-b", "user-b")
    assert (
        await client.get(f"/v2/alarms/{by_admin['alarm_id']}", headers=PROJECT_B)
    ).status_code == 200


async def test_a_project_is_required(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/alarms")
    assert resp.status_code == 401


async def test_everything_is_back_after_a_restart(
    client: httpx.AsyncClient, service: AlarmService, db_url: str, tmp_path: Path
) -> None:
    alarms = [await create(client, PROJECT_A, name=f"vm-{i}") for i in range(5)]
    await client.put(f"/v2/alarms/{alarms[0]['alarm_id']}/state", json="ok", headers=PROJECT_A)
    await client.delete(f"/v2/alarms/{alarms[4]['alarm_id']}", headers=PROJECT_A)
    # The notification path moves alarms itself, then records the transitions.
    moved = service.index.get(alarms[1]["alarm_id"])
    assert moved is not None
    when = time.time()
    moved.state, moved.state_reason, moved.state_timestamp = "alarm", "event hit", when
    await service.record_transitions(
        [
            Transition(
                alarm_id=moved.alarm_id, previous="insufficient data", current="alarm",
                reason="event hit", reason_data={}, timestamp=when,
                project_id="project-a", user_id="user-a", severity="critical",
            )
        ]
    )  # fmt: skip
    before = (await client.get("/v2/alarms", headers=PROJECT_A)).json()

    db = Database(db_url)
    try:
        restarted = AlarmService(AlarmStore(db), AlarmIndex())
        assert await restarted.load() == 4
        transport = httpx.ASGITransport(app=build_app(restarted, tmp_path))
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://test"
        ) as again:
            after = (await again.get("/v2/alarms", headers=PROJECT_A)).json()
            assert after == before
            states = {a["name"]: a["state"] for a in after}
            assert states == {
                "vm-0": "ok",
                "vm-1": "alarm",
                "vm-2": "insufficient data",
                "vm-3": "insufficient data",
            }
            history = (
                await again.get(f"/v2/alarms/{moved.alarm_id}/history", headers=PROJECT_A)
            ).json()
            assert [h["type"] for h in history] == ["state transition", "creation"]
        event = NotificationEvent.build(
            "compute.instance.update", instance_id=INSTANCE, state="error", project_id="project-a"
        )
        assert len(restarted.index.match(event)) == 4
    finally:
        await db.close()


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths) >= {
        "/v2/alarms",
        "/v2/alarms/{alarm_id}",
        "/v2/alarms/{alarm_id}/state",
        "/v2/alarms/{alarm_id}/history",
        "/v2/query/alarms",
        "/v2/query/alarms/history",
        "/v2/capabilities",
    }
    for path in paths.values():
        for operation in path.values():
            assert operation["tags"] == ["alarms (Aodh)"]
            assert operation["summary"]


async def test_a_colleague_can_put_back_the_alarm_as_read(client: httpx.AsyncClient) -> None:
    alarm = await create(client, PROJECT_A)
    colleague = {**PROJECT_A, "X-User-Id": "user-a2"}
    alarm["name"] = "renamed"
    resp = await client.put(f"/v2/alarms/{alarm['alarm_id']}", json=alarm, headers=colleague)
    assert resp.status_code == 200, resp.text
    assert resp.json()["user_id"] == "user-a"
    alarm["user_id"] = "user-x"
    resp = await client.put(f"/v2/alarms/{alarm['alarm_id']}", json=alarm, headers=colleague)
    assert resp.status_code == 403
