"""The southbound events API: every accepted shape, and every kind of bad input."""

from __future__ import annotations

import time
from typing import Any

import pytest

from opendoctor.core.model import HOST_UNREACHABLE, Event
from opendoctor.monitor.standalone import doctor_event
from tests.integration.pipeline.conftest import ADMIN, Running, host_down


def problems(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["problem"] for e in body["error"]["errors"]}


@pytest.mark.parametrize(
    ("method", "path", "wrap"),
    [
        ("PUT", "/events", lambda e: [e]),
        ("POST", "/events", lambda e: e),
        ("POST", "/events", lambda e: {"event": e}),
        ("PUT", "/events", lambda e: {"events": [e]}),
        ("POST", "/v1/event", lambda e: e),
    ],
)
async def test_every_documented_shape_is_accepted(
    running: Running, method: str, path: str, wrap: Any
) -> None:
    resp = await running.client.request(method, path, json=wrap(host_down("compute1")))
    assert resp.status_code == 202, resp.text
    [event_id] = resp.json()["accepted"]
    await running.service.bus.drain()
    events = (await running.client.get("/v1/events", headers=ADMIN)).json()
    assert [e["id"] for e in events] == [event_id]
    assert events[0]["processed"] is True


async def accepted_count(r: Running) -> int:
    return len((await r.client.get("/v1/events", headers=ADMIN)).json())


async def test_malformed_json_names_the_body(running: Running) -> None:
    resp = await running.client.put(
        "/events", content=b'[{"type": ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert "malformed JSON" in problems(resp.json())["body"]


async def test_unknown_event_type(running: Running) -> None:
    event = host_down("compute1")
    event["type"] = "compute.host.sneezed"
    resp = await running.client.put("/events", json=[event])
    assert resp.status_code == 400
    assert "unknown event type" in problems(resp.json())["[0].type"]


async def test_missing_hostname(running: Running) -> None:
    event = host_down("compute1")
    del event["details"]["hostname"]
    resp = await running.client.post("/events", json=event)
    assert resp.status_code == 400
    assert "details.hostname" in problems(resp.json())


async def test_unknown_host(running: Running) -> None:
    resp = await running.client.put("/events", json=[host_down("nosuchhost")])
    assert resp.status_code == 422
    assert "nosuchhost" in problems(resp.json())["details.hostname"]


async def test_not_an_event_at_all(running: Running) -> None:
    resp = await running.client.put("/events", json="hello")
    assert resp.status_code == 400
    assert resp.json()["error"]["errors"][0]["field"] == "body"
    resp = await running.client.put("/events", json=[])
    assert resp.status_code == 400


async def test_oversized_body_is_refused_before_it_is_read(running: Running) -> None:
    limit = running.service.settings.api.max_body_bytes
    event = host_down("compute1")
    event["details"]["padding"] = "x" * (limit + 1)
    resp = await running.client.put("/events", json=[event])
    assert resp.status_code == 413
    assert "larger than" in problems(resp.json())["body"]


async def test_one_bad_event_rejects_the_request_and_keeps_what_was_accepted(
    running: Running,
) -> None:
    ok = await running.client.put("/events", json=[host_down("compute2")])
    assert ok.status_code == 202
    bad = host_down("compute1")
    del bad["details"]["status"]
    resp = await running.client.put("/events", json={"events": [host_down("compute1"), bad]})
    assert resp.status_code == 400
    assert "events[1].details.status" in problems(resp.json())
    await running.service.bus.drain()
    # The earlier event is still there, nothing of the bad request was kept,
    # and the service still answers.
    assert await accepted_count(running) == 1
    assert (await running.client.get("/health")).json()["status"] == "ok"


async def test_each_event_records_the_monitor_that_sent_it(running: Running) -> None:
    """The suite's services know one monitor, `tests` (tests/conftest.py)."""
    resp = await running.client.put(
        "/events", json=[host_down("compute1")], headers={"X-Auth-Token": "not-a-monitor"}
    )
    assert resp.status_code == 401
    assert (await running.client.put("/events", json=[host_down("compute1")])).status_code == 202
    events = (await running.client.get("/v1/events", headers=ADMIN)).json()
    assert [e["reporter"] for e in events] == ["tests"]


async def test_admin_routes_need_the_admin_role(running: Running) -> None:
    resp = await running.client.get("/v1/faults", headers={"X-Project-Id": "project-a"})
    assert resp.status_code == 403
    resp = await running.client.get("/v1/faults")
    assert resp.status_code == 401
    assert "X-Project-Id" in problems(resp.json())


async def test_openapi_documents_every_route_and_the_event_body(running: Running) -> None:
    spec = (await running.client.get("/openapi.json")).json()
    for path in ("/events", "/v1/event", "/v2/alarms", "/v1/faults/{fault_id}", "/metrics"):
        assert path in spec["paths"], path
    assert "DoctorEvent" in spec["components"]["schemas"]
    body = spec["paths"]["/events"]["put"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][0] == {"$ref": "#/components/schemas/DoctorEvent"}


async def test_the_standalone_monitors_reports_of_a_cut_link_are_accepted(
    running: Running,
) -> None:
    # What `opendoctor monitor` PUTs for a host that answers on its alt address only.
    unreachable = Event(
        type=HOST_UNREACHABLE,
        hostname="compute1",
        status="down",
        time=time.time(),
        monitor="opendoctor-hostprobe",
        monitor_event_id="compute1-unreachable-7",
        details={"probes_missed": 3, "path": "primary", "alt_answering": True},
    )
    up = Event(HOST_UNREACHABLE, "compute1", "up", time.time(), details={"probes_missed": 0})
    for event in (unreachable, up):
        resp = await running.client.put("/events", json=[doctor_event(event)])
        assert resp.status_code == 202, resp.text
    await running.service.bus.drain()
    events = (await running.client.get("/v1/events", headers=ADMIN)).json()
    assert sorted(e["type"] for e in events) == [HOST_UNREACHABLE] * 2
