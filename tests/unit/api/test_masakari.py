"""The Masakari-compatible API in process, over the in-memory VIM, on each engine:
segments, hosts, notifications, microversions, and what each notification sets going."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.core.model import HEARTBEAT_UNHEALTHY, HOST_DOWN, PROCESS_EXITED
from opendoctor.core.settings import MasakariSettings
from opendoctor.store.db import DatabaseUnavailable
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Running,
    lab_vim,
    opted_in,
    serving,
    settings_for,
)

V1 = "/instance-ha/v1"
LATEST = {**ADMIN, "OpenStack-API-Version": "instance-ha 1.3"}
MEMBER = {"X-Project-Id": "project-a", "X-User-Id": "vnfm-a", "X-Roles": "member"}
VM1 = "00000000-0000-0000-0000-000000000001"  # on compute1 (tests.integration.pipeline)
# Exactly what masakari-monitors' hostmonitor posts when pacemaker loses compute1.
HOSTMONITOR = {
    "notification": {
        "type": "COMPUTE_HOST",
        "hostname": "compute1",
        "generated_time": "2026-12-04T10:00:00.000000",
        "payload": {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"},
    }
}


@pytest.fixture
async def ha(tmp_path: Path, db_url: str) -> AsyncIterator[Running]:
    # No fence devices in these tests: recovery evacuates unfenced.
    recovery = {"fencing": {"without_device": "evacuate"}}
    settings = settings_for(tmp_path, database_url=db_url, recovery=recovery)
    async with serving(settings, opted_in(lab_vim())) as running:
        yield running


async def _segment(client: httpx.AsyncClient, name: str = "seg", **kw: Any) -> dict[str, Any]:
    body = {"name": name, "recovery_method": "auto", "service_type": "COMPUTE", **kw}
    resp = await client.post(f"{V1}/segments", json={"segment": body}, headers=LATEST)
    assert resp.status_code == 201, resp.text
    segment: dict[str, Any] = resp.json()["segment"]
    return segment


async def _host(
    client: httpx.AsyncClient, segment_id: str, name: str = "compute1", **kw: Any
) -> dict[str, Any]:
    body = {"name": name, "type": "COMPUTE", "control_attributes": "SSH", **kw}
    resp = await client.post(
        f"{V1}/segments/{segment_id}/hosts", json={"host": body}, headers=LATEST
    )
    assert resp.status_code == 201, resp.text
    host: dict[str, Any] = resp.json()["host"]
    return host


def _notification(type_: str, payload: dict[str, str], at: str = "2026-12-04T10:00:00") -> Any:
    body = {"type": type_, "hostname": "compute1", "generated_time": at, "payload": payload}
    return {"notification": body}


async def _status(client: httpx.AsyncClient, note_id: str) -> str:
    resp = await client.get(f"{V1}/notifications/{note_id}", headers=LATEST)
    status: str = resp.json()["notification"]["status"]
    return status


def _error(resp: httpx.Response, status: int) -> tuple[str, str]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]["errors"][0]
    return error["field"], error["problem"]


async def test_segments_are_created_listed_changed_and_deleted(ha: Running) -> None:
    c = ha.client
    seg = await _segment(c, "seg-a", description="rack 1")
    assert seg["uuid"] == seg["id"] and seg["enabled"] is True and seg["updated_at"] is None
    assert seg["recovery_method"] == "auto" and seg["description"] == "rack 1"
    other = await _segment(c, "seg-b", recovery_method="reserved_host", enabled=False)

    resp = await c.get(f"{V1}/segments", headers=ADMIN)
    assert resp.headers["openstack-api-version"] == "masakari 1.0"
    assert [s["name"] for s in resp.json()["segments"]] == ["seg-b", "seg-a"]
    resp = await c.get(f"{V1}/segments?sort_key=name&sort_dir=asc&limit=1", headers=ADMIN)
    assert [s["name"] for s in resp.json()["segments"]] == ["seg-a"]
    resp = await c.get(
        f"{V1}/segments?sort_key=name&sort_dir=asc&marker={seg['uuid']}", headers=ADMIN
    )
    assert [s["name"] for s in resp.json()["segments"]] == ["seg-b"]
    resp = await c.get(f"{V1}/segments?recovery_method=reserved_host", headers=ADMIN)
    assert [s["uuid"] for s in resp.json()["segments"]] == [other["uuid"]]
    assert _error(await c.get(f"{V1}/segments?marker=nope", headers=ADMIN), 400)[0] == "marker"
    assert _error(await c.get(f"{V1}/segments?sort_key=uuid", headers=ADMIN), 400)[0] == "sort_key"

    body = {"name": "seg-a", "recovery_method": "auto", "service_type": "COMPUTE"}
    resp = await c.post(f"{V1}/segments", json={"segment": body}, headers=ADMIN)
    assert _error(resp, 409)[0] == "segment.name"

    change = {"segment": {"description": "rack 2", "enabled": True}}
    resp = await c.put(f"{V1}/segments/{other['uuid']}", json=change, headers=LATEST)
    assert resp.status_code == 200, resp.text
    changed = resp.json()["segment"]
    assert changed["description"] == "rack 2" and changed["enabled"] is True
    assert changed["updated_at"] is not None and changed["name"] == "seg-b"
    resp = await c.put(
        f"{V1}/segments/{other['uuid']}", json={"segment": {"name": "seg-a"}}, headers=ADMIN
    )
    assert resp.status_code == 409

    resp = await c.delete(f"{V1}/segments/{other['uuid']}", headers=ADMIN)
    assert resp.status_code == 204 and resp.headers["openstack-api-version"] == "masakari 1.0"
    assert (await c.get(f"{V1}/segments/{other['uuid']}", headers=ADMIN)).status_code == 404
    assert (await c.delete(f"{V1}/segments/{other['uuid']}", headers=ADMIN)).status_code == 404
    assert (await c.get(f"{V1}/segments/{seg['uuid']}", headers=ADMIN)).json()["segment"] == seg


async def test_hosts_belong_to_one_segment_and_must_be_the_vims(ha: Running) -> None:
    c = ha.client
    seg, other = await _segment(c, "seg"), await _segment(c, "other")
    host = await _host(c, seg["uuid"], reserved="True")  # masakariclient sends strings
    assert host["reserved"] is True and host["on_maintenance"] is False
    assert host["failover_segment_id"] == seg["uuid"]
    assert host["failover_segment"]["name"] == "seg" and host["uuid"] == host["id"]

    body = {"host": {"name": "compute1", "type": "COMPUTE", "control_attributes": "SSH"}}
    resp = await c.post(f"{V1}/segments/{other['uuid']}/hosts", json=body, headers=ADMIN)
    assert _error(resp, 409)[0] == "host.name"
    body["host"]["name"] = "compute42"
    resp = await c.post(f"{V1}/segments/{other['uuid']}/hosts", json=body, headers=ADMIN)
    assert _error(resp, 400) == ("host.name", "the VIM has no compute host 'compute42'")
    resp = await c.post(f"{V1}/segments/nope/hosts", json=body, headers=ADMIN)
    assert resp.status_code == 404

    await _host(c, seg["uuid"], "compute2")
    resp = await c.get(f"{V1}/segments/{seg['uuid']}/hosts?reserved=false", headers=ADMIN)
    assert [h["name"] for h in resp.json()["hosts"]] == ["compute2"]
    url = f"{V1}/segments/{seg['uuid']}/hosts/{host['uuid']}"
    resp = await c.put(url, json={"host": {"on_maintenance": True}}, headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["host"]["on_maintenance"] is True
    resp = await c.put(url, json={"host": {"name": "compute2"}}, headers=ADMIN)
    assert resp.status_code == 409
    resp = await c.put(url, json={"host": {}}, headers=ADMIN)
    assert _error(resp, 400)[0] == "host"
    resp = await c.put(url, json={"host": {"reserved": None}}, headers=ADMIN)
    assert _error(resp, 400)[0] == "host.reserved"
    wrong = f"{V1}/segments/{other['uuid']}/hosts/{host['uuid']}"
    assert (await c.get(wrong, headers=ADMIN)).status_code == 404
    assert (await c.delete(url, headers=ADMIN)).status_code == 204
    assert (await c.get(url, headers=ADMIN)).status_code == 404


async def test_only_admins_use_it_and_the_version_documents_are_open(ha: Running) -> None:
    c = ha.client
    seg = await _segment(c)
    for method, path in [
        ("GET", "/segments"),
        ("POST", "/segments"),
        ("GET", f"/segments/{seg['uuid']}"),
        ("PUT", f"/segments/{seg['uuid']}"),
        ("DELETE", f"/segments/{seg['uuid']}"),
        ("GET", f"/segments/{seg['uuid']}/hosts"),
        ("GET", "/notifications"),
        ("POST", "/notifications"),
    ]:
        resp = await c.request(method, V1 + path, headers=MEMBER, json={})
        assert _error(resp, 403)[0] == "X-Roles", (method, path)
        assert (await c.request(method, V1 + path, json={})).status_code == 401
    versions = (await c.get("/instance-ha/")).json()["versions"]
    assert versions[0]["version"] == "1.3" and versions[0]["min_version"] == "1.0"
    version = (await c.get(f"{V1}/")).json()["version"]
    assert version["links"][0] == {"rel": "self", "href": "http://opendoctor/instance-ha/v1/"}
    # Masakari also serves every route under the project's id (its catalog URL).
    resp = await c.get(f"{V1}/admin/segments/{seg['uuid']}", headers=ADMIN)
    assert resp.json()["segment"]["name"] == "seg"
    document = (await c.get("/openapi.json")).json()["paths"]
    # Its copies under the project's id are not documented twice.
    assert f"{V1}/segments" in document
    assert not any(p.startswith(f"{V1}/{{project_id}}") for p in document)
    assert "409" in document[f"{V1}/segments"]["post"]["responses"]


async def test_microversions_are_read_as_masakari_reads_them(ha: Running) -> None:
    c = ha.client
    for header, answer in [
        ({"OpenStack-API-Version": "instance-ha latest"}, "masakari 1.3"),
        ({"OpenStack-API-Version": "compute 2.1, instance-ha 1.1"}, "masakari 1.1"),
        ({"X-OpenStack-Masakari-API-Version": "1.2"}, "masakari 1.2"),
    ]:
        resp = await c.get(f"{V1}/segments", headers={**ADMIN, **header})
        assert resp.headers["openstack-api-version"] == answer
        assert resp.headers["vary"] == "OpenStack-API-Version"
    bad = {**ADMIN, "OpenStack-API-Version": "instance-ha one"}
    assert _error(await c.get(f"{V1}/segments", headers=bad), 400)[0] == "OpenStack-API-Version"
    later = {**ADMIN, "OpenStack-API-Version": "instance-ha 1.9"}
    assert _error(await c.get(f"{V1}/segments", headers=later), 406)[0] == "OpenStack-API-Version"

    # `enabled` came with 1.2: before, it is an unknown field, and nothing is made.
    body = {"name": "s", "recovery_method": "auto", "service_type": "COMPUTE", "enabled": False}
    resp = await c.post(f"{V1}/segments", json={"segment": body}, headers=ADMIN)
    assert _error(resp, 400)[0] == "segment.enabled"
    assert (await c.get(f"{V1}/segments", headers=ADMIN)).json()["segments"] == []


async def test_bad_bodies_are_refused_naming_the_field_and_change_nothing(ha: Running) -> None:
    c = ha.client
    cases = [
        (
            {"segment": {"name": "s", "recovery_method": "fast", "service_type": "C"}},
            "segment.recovery_method",
        ),
        (
            {"segment": {"name": " s", "recovery_method": "auto", "service_type": "C"}},
            "segment.name",
        ),
        (
            {"segment": {"name": "s", "recovery_method": "auto", "service_type": "C", "x": 1}},
            "segment.x",
        ),
        (
            {"segment": {"name": "s" * 256, "recovery_method": "auto", "service_type": "C"}},
            "segment.name",
        ),
        ({"segments": {}}, "segment"),
    ]
    for body, field in cases:
        resp = await c.post(f"{V1}/segments", json=body, headers=ADMIN)
        assert _error(resp, 400)[0] == field, body
    seg = await _segment(c)
    await _host(c, seg["uuid"])
    for payload, field in [
        ({"event": "CRASHED"}, "notification.payload.event"),
        ({"event": "STOPPED", "extra": "x"}, "notification.payload.extra"),
        ({"event": "STOPPED", "host_status": "GONE"}, "notification.payload.host_status"),
    ]:
        resp = await c.post(
            f"{V1}/notifications", json=_notification("COMPUTE_HOST", payload), headers=ADMIN
        )
        assert _error(resp, 400)[0] == field, payload
    vm = {"event": "LIFECYCLE", "instance_uuid": "not-a-uuid", "vir_domain_event": "X"}
    resp = await c.post(f"{V1}/notifications", json=_notification("VM", vm), headers=ADMIN)
    assert _error(resp, 400)[0] == "notification.payload.instance_uuid"
    bad_host = _notification("PROCESS", {"event": "STOPPED", "process_name": "n"})
    bad_host["notification"]["hostname"] = "compute 1"
    resp = await c.post(f"{V1}/notifications", json=bad_host, headers=ADMIN)
    assert _error(resp, 400)[0] == "notification.hostname"
    assert (await c.get(f"{V1}/notifications", headers=ADMIN)).json()["notifications"] == []
    assert await ha.service.events.recent(10) == []


async def test_the_hostmonitors_notification_opens_the_fault_that_recovers_the_host(
    ha: Running,
) -> None:
    c = ha.client
    seg = await _segment(c)
    host = await _host(c, seg["uuid"])
    resp = await c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=LATEST)
    assert resp.status_code == 202, resp.text
    note = resp.json()["notification"]
    assert note["status"] in ("new", "running") and note["type"] == "COMPUTE_HOST"
    assert (
        note["source_host_uuid"] == host["uuid"]
        and note["payload"] == HOSTMONITOR["notification"]["payload"]
    )
    assert note["generated_time"] == "2026-12-04T10:00:00.000000"

    await eventually(lambda: _finished(c, note["id"]), what="the notification finished")
    shown = (await c.get(f"{V1}/notifications/{note['id']}", headers=LATEST)).json()
    shown = shown["notification"]
    fault_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:fault/{note['id']}"))
    assert shown["fault_id"] == fault_id
    fault = (await c.get(f"/v1/faults/{fault_id}", headers=ADMIN)).json()
    assert (fault["type"], fault["hostname"]) == (HOST_DOWN, "compute1")
    assert ("force_down", "compute1", "True") in ha.vim.calls
    steps = {s["name"]: s["state"] for s in shown["recovery_workflow_details"]}
    assert steps == {"DisableComputeServiceTask": "SUCCESS", "EvacuateInstancesTask": "SUCCESS"}
    moves = (await c.get(f"{V1}/notifications/{note['id']}/vmoves", headers=LATEST)).json()
    assert {m["instance_uuid"] for m in moves["vmoves"]} == {
        VM1,
        "00000000-0000-0000-0000-000000000004",
    }
    assert {m["status"] for m in moves["vmoves"]} == {"succeeded"}
    one = moves["vmoves"][0]
    resp = await c.get(f"{V1}/notifications/{note['id']}/vmoves/{one['id']}", headers=LATEST)
    assert resp.json()["vmove"] == one
    # Before 1.1 no progress, before 1.3 no moves, as Masakari.
    old = (await c.get(f"{V1}/notifications/{note['id']}", headers=ADMIN)).json()
    assert "recovery_workflow_details" not in old["notification"]
    assert (
        await c.get(f"{V1}/notifications/{note['id']}/vmoves", headers=ADMIN)
    ).status_code == 404
    listed = await c.get(f"{V1}/notifications?status=finished", headers=ADMIN)
    assert [n["id"] for n in listed.json()["notifications"]] == [note["id"]]

    # The same again within the window: a duplicate, refused, nothing new.
    resp = await c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=ADMIN)
    assert _error(resp, 409)[0] == "notification"
    assert len((await c.get(f"{V1}/notifications", headers=ADMIN)).json()["notifications"]) == 1


async def _finished(client: httpx.AsyncClient, note_id: str) -> bool:
    return await _status(client, note_id) == "finished"


async def test_a_failed_vm_is_a_fault_of_its_server_and_others_are_ignored(
    ha: Running,
) -> None:
    c = ha.client
    seg = await _segment(c)
    await _host(c, seg["uuid"])
    failed = {"event": "LIFECYCLE", "instance_uuid": VM1, "vir_domain_event": "STOPPED_FAILED"}
    resp = await c.post(f"{V1}/notifications", json=_notification("VM", failed), headers=ADMIN)
    assert resp.status_code == 202
    note_id = resp.json()["notification"]["id"]
    first = await eventually(lambda: _handled(c, note_id), what="the server's fault open")
    fault = (await c.get(f"/v1/faults/{first['fault_id']}", headers=ADMIN)).json()
    assert (fault["type"], fault["instance_id"], fault["hostname"]) == (
        PROCESS_EXITED,
        VM1,
        "compute1",
    )

    # Another signal of the same server joins its fault: the notification follows it.
    agent = {**failed, "event": "QEMU_GUEST_AGENT_ERROR"}
    resp = await c.post(f"{V1}/notifications", json=_notification("VM", agent), headers=ADMIN)
    assert resp.status_code == 202
    second = await eventually(lambda: _handled(c, resp.json()["notification"]["id"]))
    assert second["fault_id"] == first["fault_id"]
    events = {e["type"] for e in await ha.service.events.recent(10)}
    assert events == {PROCESS_EXITED, HEARTBEAT_UNHEALTHY}

    for payload in (
        {**failed, "vir_domain_event": "STOPPED_DESTROYED"},
        {**failed, "instance_uuid": str(uuid.uuid4())},
    ):
        resp = await c.post(f"{V1}/notifications", json=_notification("VM", payload), headers=ADMIN)
        assert resp.json()["notification"]["status"] == "ignored", payload
    assert len(await ha.service.events.recent(10)) == 2


async def _handled(client: httpx.AsyncClient, note_id: str) -> dict[str, Any] | None:
    """The notification once its event is handled (its fault known), else None."""
    resp = await client.get(f"{V1}/notifications/{note_id}", headers=ADMIN)
    note: dict[str, Any] = resp.json()["notification"]
    return note if note["fault_id"] is not None and note["status"] != "new" else None


async def _running(client: httpx.AsyncClient, note_id: str) -> bool:
    return await _status(client, note_id) == "running"


@contextlib.asynccontextmanager
async def evacuations_held(ha: Running) -> AsyncIterator[None]:
    """Every evacuation waits until the block ends: a host's recovery stays running."""
    release = asyncio.Event()
    evacuate = ha.vim.evacuate

    async def held(server_id: str, target_host: str | None = None) -> Any:
        await release.wait()
        return await evacuate(server_id, target_host)

    ha.vim.evacuate = held  # type: ignore[method-assign]
    try:
        yield
    finally:
        release.set()
        ha.vim.evacuate = evacuate  # type: ignore[method-assign]


async def test_a_process_notification_disables_and_enables_scheduling(ha: Running) -> None:
    c = ha.client
    seg = await _segment(c)
    await _host(c, seg["uuid"])
    stopped = {"event": "STOPPED", "process_name": "/usr/local/bin/nova-compute"}
    resp = await c.post(
        f"{V1}/notifications", json=_notification("PROCESS", stopped), headers=LATEST
    )
    note = resp.json()["notification"]
    assert (resp.status_code, note["status"]) == (202, "finished")
    assert ("set_host_enabled", "compute1", "False") in ha.vim.calls
    assert not ha.vim.hosts["compute1"].enabled
    details = (await c.get(f"{V1}/notifications/{note['id']}", headers=LATEST)).json()
    step = details["notification"]["recovery_workflow_details"][0]
    assert (step["name"], step["state"]) == ("DisableComputeNodeTask", "SUCCESS")

    started = {**stopped, "event": "STARTED"}
    resp = await c.post(
        f"{V1}/notifications", json=_notification("PROCESS", started), headers=ADMIN
    )
    assert resp.json()["notification"]["status"] == "finished"
    assert ha.vim.hosts["compute1"].enabled

    ha.vim.fail.add("set_host_enabled")
    again = _notification("PROCESS", stopped, at="2026-12-04T11:00:00")
    resp = await c.post(f"{V1}/notifications", json=again, headers=ADMIN)
    note = resp.json()["notification"]
    assert note["status"] == "failed" and "on purpose" in note["message"]
    assert await ha.service.events.recent(10) == []  # no fault: only the VIM was asked


async def test_where_masakari_refuses_or_ignores_a_notification_so_does_it(
    ha: Running,
) -> None:
    c = ha.client
    down = HOSTMONITOR
    resp = await c.post(f"{V1}/notifications", json=down, headers=ADMIN)
    assert _error(resp, 400) == (
        "notification.hostname",
        "host 'compute1' is in no failover segment",
    )
    seg = await _segment(c)
    host = await _host(c, seg["uuid"], on_maintenance=True)
    assert _error(await c.post(f"{V1}/notifications", json=down, headers=ADMIN), 409)[0] == (
        "notification.hostname"
    )
    assert (await c.get(f"{V1}/notifications", headers=ADMIN)).json()["notifications"] == []

    url = f"{V1}/segments/{seg['uuid']}/hosts/{host['uuid']}"
    await c.put(url, json={"host": {"on_maintenance": False}}, headers=ADMIN)
    await c.put(
        f"{V1}/segments/{seg['uuid']}", json={"segment": {"enabled": False}}, headers=LATEST
    )
    resp = await c.post(f"{V1}/notifications", json=down, headers=ADMIN)
    note = resp.json()["notification"]
    assert (resp.status_code, note["status"]) == (202, "ignored")
    assert note["message"] == "the failover segment is disabled"
    started = _notification("COMPUTE_HOST", {"event": "STARTED", "host_status": "NORMAL"})
    await c.put(f"{V1}/segments/{seg['uuid']}", json={"segment": {"enabled": True}}, headers=LATEST)
    assert (await c.post(f"{V1}/notifications", json=started, headers=ADMIN)).json()[
        "notification"
    ]["status"] == "ignored"
    assert await ha.service.events.recent(10) == []
    assert ha.service.inspector.active == {}

    # Past the window (180 s), the same is news again.
    later = _notification(
        "COMPUTE_HOST", HOSTMONITOR["notification"]["payload"], "2026-12-04T10:03:01"
    )
    assert (await c.post(f"{V1}/notifications", json=later, headers=ADMIN)).status_code == 202


async def test_a_segment_does_not_change_while_its_notifications_are_handled(
    ha: Running,
) -> None:
    c = ha.client
    seg = await _segment(c)
    host = await _host(c, seg["uuid"])
    seg_url = f"{V1}/segments/{seg['uuid']}"
    async with evacuations_held(ha):
        resp = await c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=ADMIN)
        note_id = resp.json()["notification"]["id"]
        await eventually(lambda: _running(c, note_id), what="running")
        change = {"segment": {"description": "x"}}
        assert _error(await c.put(seg_url, json=change, headers=ADMIN), 409)[0] == "segment_id"
        assert (await c.delete(seg_url, headers=ADMIN)).status_code == 409
        assert (await c.delete(f"{seg_url}/hosts/{host['uuid']}", headers=ADMIN)).status_code == 409
        assert (await c.get(seg_url, headers=ADMIN)).json()["segment"]["description"] is None
    await eventually(lambda: _finished(c, note_id), what="finished")
    assert (await c.put(seg_url, json=change, headers=ADMIN)).status_code == 200


async def test_a_notification_whose_event_was_not_accepted_is_not_kept(
    ha: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ha.client
    seg = await _segment(c)
    await _host(c, seg["uuid"])

    async def refused(events: Any) -> None:
        raise DatabaseUnavailable("down for the test")

    monkeypatch.setattr(ha.service.ha_notifications, "submit", refused)
    resp = await c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=ADMIN)
    assert resp.status_code == 503
    assert (await c.get(f"{V1}/notifications", headers=ADMIN)).json()["notifications"] == []


async def test_of_two_same_notifications_at_once_one_is_taken(ha: Running) -> None:
    c = ha.client
    seg = await _segment(c)
    await _host(c, seg["uuid"])
    answers = await asyncio.gather(
        *(c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=ADMIN) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [202, 409]
    assert ha.service.ha_notifications._locks == {}  # none left behind


async def test_a_notification_still_running_after_expire_after_has_failed(
    ha: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ha.client
    seg = await _segment(c)
    await _host(c, seg["uuid"])
    async with evacuations_held(ha):
        resp = await c.post(f"{V1}/notifications", json=HOSTMONITOR, headers=ADMIN)
        note_id = resp.json()["notification"]["id"]
        await eventually(lambda: _running(c, note_id), what="running")
        expiring = MasakariSettings(expire_after=1e-3)
        monkeypatch.setattr(ha.service.ha_notifications, "settings", expiring)
        shown = (await c.get(f"{V1}/notifications/{note_id}", headers=ADMIN)).json()
    assert shown["notification"]["status"] == "failed"
    assert shown["notification"]["message"].startswith("expired")
    # Failed for good: what the recovery does afterwards does not change it.
    await eventually(lambda: _evacuated(ha), what="the evacuations done")
    assert await _status(c, note_id) == "failed"


def _evacuated(ha: Running) -> bool:
    return all(s.host != "compute1" for s in ha.vim.servers.values())


async def test_the_native_api_has_the_same_segments_and_notifications(ha: Running) -> None:
    c = ha.client
    body = {
        "segment": {"name": "native", "recovery_method": "rh_priority", "service_type": "COMPUTE"}
    }
    resp = await c.post("/v1/segments", json=body, headers=LATEST)
    assert resp.status_code == 201, resp.text
    seg = resp.json()["segment"]
    shown = (await c.get(f"{V1}/segments/{seg['uuid']}", headers=LATEST)).json()["segment"]
    assert shown["recovery_method"] == "rh_priority"
    host = {"host": {"name": "compute1", "type": "COMPUTE", "control_attributes": "SSH"}}
    resp = await c.post(f"/v1/segments/{seg['uuid']}/hosts", json=host, headers=LATEST)
    assert resp.status_code == 201, resp.text
    resp = await c.post("/v1/ha/notifications", json=HOSTMONITOR, headers=LATEST)
    assert resp.status_code == 202, resp.text
    note = resp.json()["notification"]
    listed = (await c.get(f"{V1}/notifications", headers=LATEST)).json()["notifications"]
    assert [n["notification_uuid"] for n in listed] == [note["notification_uuid"]]
    # The native /v1/notifications is still the deliveries' list, not Masakari's.
    deliveries = await c.get("/v1/notifications", headers=ADMIN)
    assert deliveries.status_code == 200 and isinstance(deliveries.json(), list)
