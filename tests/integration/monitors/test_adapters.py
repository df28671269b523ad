"""The adapters' routes on the service in process (the pipeline tests' in-memory VIM):
who may post, what is refused and how the answer names it, how alerts map to events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.app.monitor_queue import QueueIntake
from opendoctor.monitor.alerts import Holds, Made
from opendoctor.monitor.queue import Refused
from tests.conftest import MONITOR, MONITOR_TOKEN, eventually
from tests.integration.pipeline.conftest import Running, lab_vim, serving, settings_for

ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin"}
ANY = {"monitors": ["*"]}
SERVER = "00000000-0000-0000-0000-000000000002"  # vm2, on compute2


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    monitors: dict[str, Any] = {
        "alertmanager": {"monitors": ["tests"], "hosts": {"node-a": "compute3"}, "max_alerts": 6},
        "zabbix": ANY,
        "collectd": {
            **ANY,
            "thresholds": [{"match": {"plugin": "load"}, "above": 10, "host_field": "host"}],
        },
    }
    # Faults here only tell and clear: nothing is evacuated (the e2e tests do the same).
    settings = settings_for(tmp_path, monitors=monitors, recovery={"enabled": False})
    async with serving(settings, lab_vim()) as r:
        yield r


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": {}, "fingerprint": ""}


def hook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "opendoctor", "alerts": list(alerts)}


async def post_am(r: Running, body: Any, **headers: str) -> httpx.Response:
    return await r.client.post("/v1/monitors/alertmanager", json=body, headers=headers)


def errors(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(e["field"], e["problem"]) for e in resp.json()["error"]["errors"]]


async def active(r: Running) -> dict[str, dict[str, Any]]:
    faults = (await r.client.get("/v1/faults?status=active", headers=ADMIN)).json()
    return {f["instance_id"] or f["hostname"]: f for f in faults}


async def test_who_may_post(running: Running, tmp_path: Path) -> None:
    body = hook(alert(alertname="HostDown", instance="compute1:9100"))
    app = create_app(running.service.facade, manage=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://opendoctor"
    ) as anonymous:
        resp = await anonymous.post("/v1/monitors/alertmanager", json=body)
        assert resp.status_code == 401
        assert errors(resp)[0][0] == "X-Auth-Token"
        # Alertmanager sends its credential as a bearer token.
        bearer = {"Authorization": f"Bearer {MONITOR_TOKEN}"}
        resp = await anonymous.post("/v1/monitors/alertmanager", json=body, headers=bearer)
        assert resp.status_code == 202, resp.text
        resp = await anonymous.post(
            "/v1/monitors/alertmanager", json=body, headers={"Authorization": "Bearer nope"}
        )
        assert resp.status_code == 401
    # The tests' monitor is not one collectd's adapter takes by default.
    async with serving(settings_for(tmp_path / "other"), lab_vim()) as r:
        resp = await r.client.post("/v1/monitors/collectd", json=[])
        assert resp.status_code == 403
        [(field, problem)] = errors(resp)
        assert field == "X-Auth-Token" and "monitors.collectd.monitors" in problem


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, "body"),
        (b"[]", 400, "body"),
        ({"version": "3", "status": "firing", "alerts": []}, 400, "version"),
        (hook(*[alert(alertname="HostDown")] * 7), 413, "alerts"),
        (hook(alert(alertname="x" * 3000)), 400, "alerts[0].labels.alertname"),
        (hook(alert(alertname="a\x00b")), 400, "alerts[0].labels.alertname"),
        (hook(alert(**{f"l{i}": "v" for i in range(65)})), 400, "alerts[0].labels"),
        (hook({"status": "burning", "labels": {}}), 400, "alerts[0].status"),
        (b"[" * 40 + b"]" * 40, 400, "body"),
    ],
)
async def test_alertmanager_bodies_refused(
    running: Running, body: Any, status: int, field: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await running.client.post(
        "/v1/monitors/alertmanager", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    assert errors(resp)[0][0] == field
    assert await active(running) == {}


async def test_alerts_map_to_hosts_and_servers(running: Running) -> None:
    body = hook(
        alert(alertname="HostDown", instance="127.0.1.1:9100"),  # compute1's address
        alert(alertname="NodeDown", nodename="node-a"),  # renamed: compute3
        alert(alertname="ServerDown", instance_id=SERVER),
        alert(alertname="DiskFull", instance="compute2"),  # no rule: not a fault
        alert(alertname="HostDown", instance="elsewhere.example.org:9100"),
        alert(alertname="InstanceDown", instance="compute2.example.org:9100"),
    )
    resp = await post_am(running, body)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert len(answer["accepted"]) == 4
    assert {(s["alert"], s["field"]) for s in answer["skipped"]} == {
        ("alerts[3]", "rules"),
        ("alerts[4]", "instance"),
    }
    faults = await eventually(lambda: _count(running, 4), what="four faults")
    assert faults["compute1"]["type"] == "compute.host.down"
    assert faults["compute3"]["type"] == "compute.host.down"
    assert faults[SERVER]["type"] == "compute.instance.lifecycle.exited"
    # InstanceDown says only that the exporter is gone: unreachable, not down.
    assert faults["compute2"]["type"] == "compute.host.unreachable"


async def _count(r: Running, n: int) -> dict[str, dict[str, Any]] | None:
    found = await active(r)
    return found if len(found) == n else None


async def _none_active(r: Running) -> bool:
    return not await active(r)


async def test_a_resolved_alert_clears_only_what_nothing_else_holds(running: Running) -> None:
    a = alert(alertname="HostDown", instance="compute1:9100", job="node")
    b = alert(alertname="NodeDown", instance="compute1")
    assert (await post_am(running, hook(a, b))).status_code == 202
    fault = (await eventually(lambda: _count(running, 1), what="the fault"))["compute1"]
    # Alertmanager sends the group again: `a` resolved, `b` still firing (a repeat).
    resp = await post_am(running, hook(dict(a, status="resolved"), b))
    assert len(resp.json()["accepted"]) == 1
    [skipped] = resp.json()["skipped"]
    assert skipped["field"] == "status" and "1 other" in skipped["problem"]
    resp = await post_am(running, hook(dict(b, status="resolved")))
    assert len(resp.json()["accepted"]) == 1
    await eventually(lambda: _cleared(running, fault["id"]), what="the fault to clear")


async def _cleared(r: Running, fault_id: str) -> bool:
    fault = (await r.client.get(f"/v1/faults/{fault_id}", headers=ADMIN)).json()
    return bool(fault["status"] == "cleared")


async def test_each_monitor_has_its_own_rate(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, api={"events_rate": 0.01, "events_burst": 2}, monitors={"alertmanager": ANY}
    )
    async with serving(settings, lab_vim()) as r:
        two = hook(
            alert(alertname="HostDown", instance="compute1"),
            alert(alertname="HostDown", instance="compute2"),
        )
        assert (await post_am(r, two)).status_code == 202
        resp = await post_am(r, hook(alert(alertname="HostDown", instance="compute3")))
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) > 0
        three = hook(*[alert(alertname="HostDown", instance=f"compute{i}") for i in (1, 2, 3)])
        assert (await post_am(r, three)).status_code == 413


def zabbix_body(**fields: str) -> dict[str, Any]:
    body = {
        "event_id": "1001",
        "event_value": "1",
        "event_source": "0",
        "event_update_status": "0",
        "host": "compute2",
        "event_name": "Unavailable by ICMP ping",
        "severity": "High",
        "event_tags": '[{"tag": "service", "value": "compute"}]',
        "event_recovery_id": "{EVENT.RECOVERY.ID}",  # unresolved in a problem: absent
    }
    return body | fields


async def test_the_zabbix_webhook(running: Running) -> None:
    post = running.client.post
    resp = await post("/v1/monitors/zabbix", json=zabbix_body(event_update_status="1"))
    assert resp.json() == {
        "accepted": [],
        "skipped": [
            {
                "alert": "body",
                "field": "event_source",
                "problem": "not a trigger's problem or recovery",
            }
        ],
    }
    resp = await post("/v1/monitors/zabbix", json=zabbix_body(host="{HOST.HOST}"))
    assert resp.json()["skipped"][0]["problem"] == "no host named in host"
    for bad, field in [
        (zabbix_body(event_value="2"), "event_value"),
        (zabbix_body(event_id=""), "event_id"),
        (zabbix_body(event_tags="not json"), "event_tags"),
        (zabbix_body(host=["compute2"]), "host"),  # type: ignore[arg-type]
        (zabbix_body(**{f"p{i}": "v" for i in range(70)}), "body"),
    ]:
        resp = await post("/v1/monitors/zabbix", json=bad)
        assert resp.status_code == 400, (bad, resp.text)
        assert errors(resp)[0][0] == field
    resp = await post("/v1/monitors/zabbix", json=zabbix_body())
    assert resp.status_code == 202 and len(resp.json()["accepted"]) == 1
    fault = (await eventually(lambda: _count(running, 1), what="the fault"))["compute2"]
    resp = await post("/v1/monitors/zabbix", json=zabbix_body(event_value="0"))
    assert len(resp.json()["accepted"]) == 1
    await eventually(lambda: _none_active(running), what="the recovery")

    async def recorded() -> list[dict[str, Any]] | None:
        # The fault clears as the recovery is handled; the event's record (processed,
        # with its fault) is written a moment after.
        events = (await running.client.get("/v1/events", headers=ADMIN)).json()
        mine = [e for e in events if e["fault_id"] == fault["id"]]
        return mine if len(mine) == 2 else None

    mine = await eventually(recorded, what="both events recorded with the fault")
    assert {e["monitor_event_id"] for e in mine} == {"1001"}
    assert {e["status"] for e in mine} == {"down", "up"}
    assert mine[0]["details"]["fields"]["tags.service"] == "compute"


async def test_collectd_bodies(running: Running) -> None:
    post = running.client.post
    warning = [{"labels": {"alertname": "collectd_ping", "instance": "x", "severity": "WARNING"}}]
    resp = await post("/v1/monitors/collectd", json=warning)
    assert resp.json()["skipped"][0]["field"] == "labels.severity"
    for bad, field in [
        ({"labels": {}}, "body"),
        ([1], "[0]"),
        (
            [{"values": [], "dsnames": ["value"], "host": "h", "plugin": "p", "type": "t"}],
            "[0].values",
        ),
        ([{"labels": {"a": "b" * 3000}}], "[0].labels.a"),
    ]:
        resp = await post("/v1/monitors/collectd", json=bad)
        assert resp.status_code == 400, (bad, resp.text)
        assert errors(resp)[0][0] == field
    # The configured threshold: load above 10 on compute1 is a fault, back under it not.
    values = {"dsnames": ["shortterm"], "host": "compute1", "plugin": "load", "type": "load"}
    resp = await post("/v1/monitors/collectd", json=[dict(values, values=[3.0])])
    assert resp.json() == {"accepted": [], "skipped": []}
    resp = await post("/v1/monitors/collectd", json=[dict(values, values=[12.0])])
    assert len(resp.json()["accepted"]) == 1
    resp = await post("/v1/monitors/collectd", json=[dict(values, values=[13.0])])
    assert resp.json()["accepted"] == []  # still above: no crossing
    await eventually(lambda: _count(running, 1), what="the fault")
    resp = await post("/v1/monitors/collectd", json=[dict(values, values=[1.0])])
    assert len(resp.json()["accepted"]) == 1
    await eventually(lambda: _none_active(running), what="the fault to clear")


async def test_every_route_declares_its_errors(running: Running) -> None:
    schema = (await running.client.get("/openapi.json")).json()
    paths = {p: ops for p, ops in schema["paths"].items() if p.startswith("/v1/monitors/")}
    assert set(paths) == {
        "/v1/monitors/alertmanager",
        "/v1/monitors/zabbix",
        "/v1/monitors/zabbix/hosts/{hostname}/sync",
        "/v1/monitors/collectd",
    }
    for ops in paths.values():
        responses = ops["post"]["responses"]
        assert {"202", "400", "401", "403", "413", "429", "503"} <= set(responses)
    assert {"404", "502"} <= set(
        paths["/v1/monitors/zabbix/hosts/{hostname}/sync"]["post"]["responses"]
    )
    body = paths["/v1/monitors/alertmanager"]["post"]["requestBody"]["content"]["application/json"]
    assert "alerts" in body["schema"]["properties"]


async def test_the_queue_intake_refuses_what_it_cannot_take(running: Running) -> None:
    facade = running.service.facade
    settings = facade.settings.monitors.queue.model_copy(update={"max_events": 2})
    intake = QueueIntake(facade, settings)

    def event(host: str = "compute1", **details: str) -> dict[str, Any]:
        return {
            "type": "compute.host.down",
            "details": {"hostname": host, "status": "down", **details},
        }

    refused = [
        (b"{", None, "body"),
        (b"[]", None, "body"),
        (json.dumps([event()] * 3).encode(), None, "body"),
        (json.dumps([event("nowhere")]).encode(), None, "details.hostname"),
        (json.dumps({"events": [event(), {"type": "x"}]}).encode(), None, "events[1].type"),
        (json.dumps(event()).encode(), "not-a-token", "x-auth-token"),
        (b"[" * 40 + b"]" * 40, None, "body"),
    ]
    for raw, token, field in refused:
        with pytest.raises(Refused) as caught:
            await intake.take(raw, token)
        assert caught.value.field == field, (raw, caught.value)
    strict = QueueIntake(facade, settings.model_copy(update={"require_token": True}))
    with pytest.raises(Refused):
        await strict.take(json.dumps(event()).encode(), None)
    assert await intake.take(json.dumps(event()).encode(), MONITOR_TOKEN) == 1
    assert await intake.take(json.dumps(event("compute2")).encode(), None) == 1
    events = await eventually(lambda: _reported(running, 2), what="the two events")
    assert {(e["hostname"], e["reporter"]) for e in events} == {
        ("compute1", "tests"),
        ("compute2", "queue"),
    }
    assert MONITOR["X-Auth-Token"] == MONITOR_TOKEN


async def _reported(r: Running, n: int) -> list[dict[str, Any]] | None:
    events: list[dict[str, Any]] = (await r.client.get("/v1/events", headers=ADMIN)).json()
    return events if len(events) >= n else None


def test_what_holds_a_resource_is_bounded() -> None:
    holds = Holds(limit=3)
    one, two = Made("compute.host.down", "compute1", None), Made("compute.host.down", "c2", None)
    for i in range(5):  # one resource, more alerts than the bound
        holds.hold(("alertmanager", f"a{i}"), one)
    assert len(holds) == 3
    holds.hold(("alertmanager", "b"), two)
    assert len(holds) == 3 and holds.made_by(("alertmanager", "b")) == two
    assert holds.release(("alertmanager", "gone"), two) == 1  # b still holds c2
    assert holds.release(("alertmanager", "b"), two) == 0
