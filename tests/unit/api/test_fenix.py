"""The Fenix-compatible maintenance API (`/v1/maintenance`, `/v1/instance_group`,
`/v1/instance`) on an in-process service over the in-memory VIM: sessions started and
shown, the owners' side, constraints kept to their project, errors naming their field.

Sessions start in 2099, so they wait for their owners' answers and go no further."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.integration.pipeline.conftest import ADMIN, Running, lab_vim, serving, settings_for

A = {"X-Project-Id": "project-a", "X-User-Id": "vnfm-a", "X-Roles": "member"}
B = {"X-Project-Id": "project-b", "X-User-Id": "vnfm-b", "X-Roles": "member"}
VM1 = "00000000-0000-0000-0000-000000000001"  # project-a's, on compute1
VM4 = "00000000-0000-0000-0000-000000000004"  # project-b's, on compute1
LATER = "2099-01-01 00:00:00"
MAX_BODY = 65_536


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Running]:
    # No wait for MAINTENANCE_COMPLETE answers: a cancelled session ends at once.
    settings = settings_for(
        tmp_path, maintenance={"complete_wait": 0}, api={"max_body_bytes": MAX_BODY}
    )
    async with serving(settings, lab_vim()) as running:
        yield running


def problem(resp: httpx.Response) -> str:
    """The field the error names."""
    field: str = resp.json()["error"]["errors"][0]["field"]
    return field


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    resp = await client.post(
        "/v1/maintenance", json={"maintenance_at": LATER, **body}, headers=ADMIN
    )
    assert resp.status_code == 200, resp.text
    session_id: str = resp.json()["session_id"]
    return session_id


async def detail(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/maintenance/{session_id}/detail", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def asked(client: httpx.AsyncClient, session_id: str, project_id: str) -> str | None:
    projects = {p["project_id"]: p for p in (await detail(client, session_id))["projects"]}
    found = projects.get(project_id)
    return None if found is None else found["asked"]


async def test_a_session_is_started_and_shown(api: Running) -> None:
    body = {
        "hosts": ["compute1", "compute2"],
        "state": "MAINTENANCE",
        "metadata": {"openstack_version": "2026.1"},
        "workflow": "default",
        "actions": [{"plugin": "dummy", "type": "host", "metadata": {"why": "firmware"}}],
    }
    session_id = await start(api.client, **body)

    shown = await api.client.get(f"/v1/maintenance/{session_id}", headers=ADMIN)
    assert shown.status_code == 200
    assert shown.json() == {
        "session_id": session_id,
        "state": "MAINTENANCE",
        "percent_done": 0,
        "paused": False,
        "waiting": shown.json()["waiting"],  # what it waits for is the engine's to say
        "error": None,
        "maintenance_at": LATER,
        "hosts": ["compute1", "compute2"],
    }
    whole = await detail(api.client, session_id)
    assert [h["name"] for h in whole["host_progress"]] == ["compute1", "compute2"]
    assert {h["state"] for h in whole["host_progress"]} == {"waiting"}
    assert whole["metadata"] == {"openstack_version": "2026.1"}
    assert whole["actions"] == [body["actions"][0]]
    assert whole["log"][0]["what"] == "session created over 2 hosts"
    # Each owner of an instance on those hosts is asked for its consent.
    await eventually(lambda: asked(api.client, session_id, "project-a"), what="project-a asked")
    assert await asked(api.client, session_id, "project-a") == "MAINTENANCE"

    # ISO 8601 is taken too; the time is shown as Fenix writes it.
    other = await start(api.client, hosts=["compute3"], maintenance_at="2099-01-01T00:00:00Z")
    active = (await api.client.get("/v1/maintenance?active=true", headers=ADMIN)).json()
    listed = {s["session_id"]: s for s in active["sessions"]}
    assert set(listed) == {session_id, other}
    assert listed[other]["maintenance_at"] == LATER and listed[other]["hosts"] == ["compute3"]
    assert listed[session_id]["percent_done"] == 0 and listed[session_id]["created"]
    ended = (await api.client.get("/v1/maintenance?active=false", headers=ADMIN)).json()
    assert ended["sessions"] == []
    one = (await api.client.get("/v1/maintenance?limit=1", headers=ADMIN)).json()
    assert len(one["sessions"]) == 1


async def test_a_host_is_in_one_running_session_at_a_time(api: Running) -> None:
    await start(api.client, hosts=["compute1"])
    again = await api.client.post(
        "/v1/maintenance", json={"hosts": ["compute2", "compute1"]}, headers=ADMIN
    )
    assert again.status_code == 409 and problem(again) == "hosts"
    assert "compute1" in again.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hosts": ["compute1", "nowhere"]}, "hosts"),
        ({"hosts": ["compute1"], "maintenance_at": "next tuesday"}, "maintenance_at"),
        ({"hosts": ["compute1"], "maintenance_at": "2099-13-01 00:00:00"}, "maintenance_at"),
        ({"hosts": ["compute1"], "maintenance_at": 1234567890}, "maintenance_at"),
        ({"hosts": ["compute1"], "maintenance_at": "9999-12-31T23:59:59-12:00"}, "maintenance_at"),
        ({"hosts": ["compute1"], "state": "MAINTENANCE_DONE"}, "state"),
        ({"hosts": ["compute1"], "workflow": "vnf"}, "workflow"),
        ({"hosts": [""]}, "hosts[0]"),
        ({"hosts": ["x" * 256]}, "hosts[0]"),
        ({"hosts": ["compute1"], "actions": [{"plugin": "reboot"}]}, "actions[0].plugin"),
        (
            {"hosts": ["compute1"], "actions": [{"plugin": "workflow"}]},
            "actions[0].metadata.workflow",
        ),
        ({"hosts": ["compute1"], "actions": [{"plugin": "dummy"}] * 21}, "actions"),
        ({"hosts": ["compute1"], "metadata": {"blob": "x" * 17_000}}, "metadata"),
        ({"hosts": ["compute1"], "metadata": {"n": 2**64}}, "metadata"),
        ({"hosts": ["compute1"], "metadata": "not an object"}, "metadata"),
        ({"hosts": ["compute1"], "download": ["image.qcow2"]}, "download"),
    ],
)
async def test_a_bad_session_is_refused_naming_the_field(
    api: Running, body: dict[str, Any], field: str
) -> None:
    resp = await api.client.post("/v1/maintenance", json=body, headers=ADMIN)
    assert resp.status_code == 400, resp.text
    assert problem(resp) == field
    listed = (await api.client.get("/v1/maintenance", headers=ADMIN)).json()
    assert listed["sessions"] == []


async def test_metadata_nested_deep_is_refused(api: Running) -> None:
    deep: dict[str, Any] = {}
    for _ in range(10):
        deep = {"d": deep}
    body = {"hosts": ["compute1"], "metadata": deep}
    resp = await api.client.post("/v1/maintenance", json=body, headers=ADMIN)
    assert resp.status_code == 400 and problem(resp) == "metadata"
    assert "deeper" in resp.json()["error"]["message"]


async def test_a_body_over_the_bound_is_413(api: Running) -> None:
    body = json.dumps({"hosts": ["compute1"] * (MAX_BODY // 10)})
    resp = await api.client.post(
        "/v1/maintenance", content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    assert resp.status_code == 413 and problem(resp) == "body"


async def test_sessions_are_the_admins(api: Running) -> None:
    session_id = await start(api.client, hosts=["compute1"])
    for method, path, body in (
        ("POST", "/v1/maintenance", {"hosts": ["compute2"]}),
        ("GET", "/v1/maintenance", None),
        ("GET", f"/v1/maintenance/{session_id}", None),
        ("GET", f"/v1/maintenance/{session_id}/detail", None),
        ("PUT", f"/v1/maintenance/{session_id}", {"action": "pause"}),
        ("DELETE", f"/v1/maintenance/{session_id}", None),
    ):
        resp = await api.client.request(method, path, json=body, headers=A)
        assert resp.status_code == 403, (method, path, resp.text)
        assert problem(resp) == "X-Roles"
    shown = (await api.client.get(f"/v1/maintenance/{session_id}", headers=ADMIN)).json()
    assert shown["paused"] is False and shown["state"] == "MAINTENANCE"


async def test_an_owner_reads_its_instances_and_answers(api: Running) -> None:
    session_id = await start(api.client, hosts=["compute1"])
    mine = f"/v1/maintenance/{session_id}/project-a"
    # Doctor's sample app manager sends the session id as a body with its GET.
    resp = await api.client.request("GET", mine, json={"session_id": session_id}, headers=A)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"instance_ids": [VM1]}
    theirs = await api.client.get(f"/v1/maintenance/{session_id}/project-b", headers=A)
    assert theirs.status_code == 403 and problem(theirs) == "project_id"
    by_admin = await api.client.get(f"/v1/maintenance/{session_id}/project-b", headers=ADMIN)
    assert by_admin.json() == {"instance_ids": [VM4]}
    nowhere = await api.client.get("/v1/maintenance/no-such-session/project-a", headers=A)
    assert nowhere.status_code == 404 and problem(nowhere) == "session_id"

    await eventually(lambda: asked(api.client, session_id, "project-a"), what="project-a asked")
    wrong = await api.client.put(mine, json={"state": "ACK_PLANNED_MAINTENANCE"}, headers=A)
    assert wrong.status_code == 409 and problem(wrong) == "state"
    assert "ACK_MAINTENANCE" in wrong.json()["error"]["message"]
    for body, field in (
        ({"state": "YES"}, "state"),
        ({"state": "ACK_MAINTENANCE", "session_id": "another"}, "session_id"),
        (
            {"state": "ACK_MAINTENANCE", "instance_actions": {VM1: "REBOOT"}},
            f"instance_actions.{VM1}",
        ),
        ({"state": "ACK_MAINTENANCE", "instance_actions": {VM1: "MIGRATE"}}, "instance_actions"),
        ({"state": "ACK_MAINTENANCE", "instance_ids": "all"}, "instance_ids"),
        ({"state": "ACK_MAINTENANCE", "instance_action": "REBOOT"}, "instance_action"),
    ):
        resp = await api.client.put(mine, json=body, headers=A)
        assert resp.status_code == 400, (body, resp.text)
        assert problem(resp) == field
    for_b = await api.client.put(
        f"/v1/maintenance/{session_id}/project-b", json={"state": "ACK_MAINTENANCE"}, headers=A
    )
    assert for_b.status_code == 403 and problem(for_b) == "project_id"

    reply = {"session_id": session_id, "state": "ACK_MAINTENANCE", "instance_ids": [VM1]}
    ok = await api.client.put(mine, json=reply, headers=A)
    assert ok.status_code == 200 and ok.json() == {}
    projects = {p["project_id"]: p for p in (await detail(api.client, session_id))["projects"]}
    assert projects["project-a"]["reply"] == "ACK_MAINTENANCE"
    assert projects["project-a"]["instance_ids"] == [VM1]
    assert projects["project-b"]["reply"] is None


async def test_pause_resume_and_cancel(api: Running) -> None:
    session_id = await start(api.client, hosts=["compute1"])
    path = f"/v1/maintenance/{session_id}"
    paused = await api.client.put(path, json={"action": "pause"}, headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    resumed = await api.client.put(path, json={"action": "resume"}, headers=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    bad = await api.client.put(path, json={"action": "stop"}, headers=ADMIN)
    assert bad.status_code == 400 and problem(bad) == "action"

    cancelled = await api.client.delete(path, headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["session_id"] == session_id

    async def cancelled() -> bool:
        shown = await api.client.get(path, headers=ADMIN)
        return bool(shown.json()["state"] == "MAINTENANCE_CANCELLED")

    await eventually(cancelled, what="the session cancelled")
    late = await api.client.put(path, json={"action": "resume"}, headers=ADMIN)
    assert late.status_code == 409 and problem(late) == "session_id"
    reply = {"state": "ACK_MAINTENANCE_COMPLETE"}
    answer = await api.client.put(f"{path}/project-a", json=reply, headers=A)
    assert answer.status_code == 409
    # Doctor's admin tool deletes each session once it has ended, and wants a 200.
    again = await api.client.delete(path, headers=ADMIN)
    assert again.status_code == 200 and again.json()["state"] == "MAINTENANCE_CANCELLED"
    ended = (await api.client.get("/v1/maintenance?active=false", headers=ADMIN)).json()
    assert [s["session_id"] for s in ended["sessions"]] == [session_id]

    for method in ("GET", "PUT", "DELETE"):
        body = {"action": "pause"} if method == "PUT" else None
        resp = await api.client.request(method, "/v1/maintenance/nope", json=body, headers=ADMIN)
        assert resp.status_code == 404 and problem(resp) == "session_id"


GROUP = {
    "group_id": "g-a",
    "project_id": "project-a",
    "group_name": "doctor_ha_app_group",
    "anti_affinity_group": True,
    "max_instances_per_host": 1,
    "max_impacted_members": 1,
    "recovery_time": 4,
    "resource_mitigation": True,
}
# As Doctor's VNF manager sends it ("MIGRATION" is its spelling of MIGRATE).
INSTANCE = {
    "instance_id": VM1,
    "project_id": "project-a",
    "group_id": "g-a",
    "instance_name": "vm1",
    "max_interruption_time": 120,
    "migration_type": "MIGRATION",
    "resource_mitigation": True,
    "lead_time": 40,
}


async def test_group_constraints_are_their_projects(api: Running) -> None:
    c = api.client
    put = await c.put("/v1/instance_group/g-a", json=GROUP, headers=A)
    assert put.status_code == 200, put.text
    assert put.json() | {"updated": None} == GROUP | {"updated": None}
    assert (await c.get("/v1/instance_group/g-a", headers=A)).json()["recovery_time"] == 4
    assert (await c.get("/v1/instance_group/g-a", headers=ADMIN)).status_code == 200
    # Another project's answers as one that does not exist.
    for method in ("GET", "DELETE"):
        resp = await c.request(method, "/v1/instance_group/g-a", headers=B)
        assert resp.status_code == 404 and problem(resp) == "group_id"
    taken = await c.put("/v1/instance_group/g-a", json=GROUP | {"project_id": None}, headers=B)
    assert taken.status_code == 409 and problem(taken) == "group_id"
    posing = await c.put("/v1/instance_group/g-b", json=GROUP | {"group_id": "g-b"}, headers=B)
    assert posing.status_code == 403 and problem(posing) == "project_id"
    for body, field in (
        (GROUP | {"group_id": "g-other"}, "group_id"),
        (GROUP | {"max_impacted_members": -1}, "max_impacted_members"),
        (GROUP | {"recovery_time": 10**9}, "recovery_time"),
        (GROUP | {"group_name": "x" * 256}, "group_name"),
        (GROUP | {"colour": "red"}, "colour"),
    ):
        resp = await c.put("/v1/instance_group/g-a", json=body, headers=A)
        assert resp.status_code == 400, (body, resp.text)
        assert problem(resp) == field
    gone = await c.delete("/v1/instance_group/g-a", headers=A)
    assert gone.status_code == 204
    assert (await c.get("/v1/instance_group/g-a", headers=A)).status_code == 404
    # The admin's, without a project named, are the admin's project's.
    by_admin = await c.put(
        "/v1/instance_group/g-x", json={"max_impacted_members": 2}, headers=ADMIN
    )
    assert by_admin.status_code == 200 and by_admin.json()["project_id"] == "admin"


async def test_instance_constraints_are_their_projects(api: Running) -> None:
    c = api.client
    assert (await c.put("/v1/instance_group/g-a", json=GROUP, headers=A)).status_code == 200
    put = await c.put(f"/v1/instance/{VM1}", json=INSTANCE, headers=A)
    assert put.status_code == 200, put.text
    assert put.json()["migration_type"] == "MIGRATE" and put.json()["lead_time"] == 40
    shown = await c.get(f"/v1/instance/{VM1}", headers=A)
    assert shown.json()["group_id"] == "g-a" and shown.json()["project_id"] == "project-a"

    for method in ("GET", "DELETE"):
        resp = await c.request(method, f"/v1/instance/{VM1}", headers=B)
        assert resp.status_code == 404 and problem(resp) == "instance_id"
    # The VIM says whose an instance is: another project's answers 404 here too.
    theirs = await c.put(f"/v1/instance/{VM1}", json=INSTANCE | {"project_id": None}, headers=B)
    assert theirs.status_code == 404 and problem(theirs) == "instance_id"
    body = INSTANCE | {"instance_id": VM4, "project_id": None}
    their_group = await c.put(f"/v1/instance/{VM4}", json=body, headers=B)
    assert their_group.status_code == 400 and problem(their_group) == "group_id"
    for bad, field in (
        (INSTANCE | {"instance_id": VM4}, "instance_id"),
        (INSTANCE | {"migration_type": "TELEPORT"}, "migration_type"),
        (INSTANCE | {"max_interruption_time": -5}, "max_interruption_time"),
        (INSTANCE | {"lead_time": "soon"}, "lead_time"),
    ):
        resp = await c.put(f"/v1/instance/{VM1}", json=bad, headers=A)
        assert resp.status_code == 400, (bad, resp.text)
        assert problem(resp) == field

    # The admin's constraints for a known instance are its owner's.
    by_admin = await c.put(
        f"/v1/instance/{VM4}", json={"migration_type": "LIVE_MIGRATE"}, headers=ADMIN
    )
    assert by_admin.status_code == 200 and by_admin.json()["project_id"] == "project-b"
    assert (await c.get(f"/v1/instance/{VM4}", headers=B)).json()["migration_type"] == (
        "LIVE_MIGRATE"
    )
    assert (await c.delete(f"/v1/instance/{VM1}", headers=A)).status_code == 204
    assert (await c.get(f"/v1/instance/{VM1}", headers=A)).status_code == 404


async def test_openapi_declares_the_errors(api: Running) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    declared = {
        ("/v1/maintenance", "post"): {"400", "403", "409", "413", "503"},
        ("/v1/maintenance/{session_id}", "put"): {"400", "403", "404", "409", "503"},
        ("/v1/maintenance/{session_id}/{project_id}", "put"): {"400", "403", "404", "409"},
        ("/v1/instance_group/{group_id}", "put"): {"400", "403", "409", "413"},
        ("/v1/instance/{instance_id}", "delete"): {"404", "503"},
    }
    for (path, method), statuses in declared.items():
        assert statuses <= set(paths[path][method]["responses"]), (path, method)


async def test_503_when_maintenance_is_off(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, maintenance={"enabled": False})
    async with serving(settings, lab_vim()) as off:
        resp = await off.client.post("/v1/maintenance", json={"hosts": []}, headers=ADMIN)
        assert resp.status_code == 503
        assert "maintenance" in resp.json()["error"]["message"]
        group = await off.client.get("/v1/instance_group/g", headers=A)
        assert group.status_code == 503
