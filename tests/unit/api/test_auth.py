"""Who may call what, in each auth mode (docs/configuration.md, "Identity").

Northbound callers prove who they are by identity headers (`trusted-headers`) or by a
configured token (`token`); monitors by a token of their own, which each event records.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.integration.pipeline.conftest import alarm_for, host_down
from tests.unit.api.conftest import MONITOR_NAME, MONITOR_TOKEN, Api

VM1 = "00000000-0000-0000-0000-000000000001"  # project-a's, on compute1
VM2 = "00000000-0000-0000-0000-000000000002"  # project-b's, on compute2
NON_ASCII = "tök-vnfm-ä".encode()  # what a client sends as bytes on the wire


def refused(resp: httpx.Response, field: str) -> None:
    """A 401 whose JSON error names the credential that is missing or wrong."""
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["status"] == 401
    assert [e["field"] for e in error["errors"]] == [field], error


async def create_alarm(api: Api, who: str, server_id: str) -> dict[str, Any]:
    body = alarm_for(server_id, api.consumer.url + "/failure")
    resp = await api.client.post("/v2/alarms", json=body, headers=api.who(who))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def test_a_caller_without_an_identity_is_refused(api: Api) -> None:
    """Every northbound route answers 401, naming the header to send, to a caller who
    does not say who it is."""
    for method, path, body in [
        ("GET", "/v2/alarms", None),
        ("POST", "/v2/alarms", alarm_for(VM1, api.consumer.url)),
        ("GET", "/v1/servers", None),
        ("GET", "/v1/faults", None),
    ]:
        resp = await api.client.request(method, path, json=body)
        refused(resp, api.identity_field)
    # The refused POST created nothing.
    assert (await api.client.get("/v2/alarms", headers=api.who("admin"))).json() == []


async def test_a_project_sees_and_changes_only_its_own_alarms(api: Api) -> None:
    """A VNF manager sees, changes and deletes its project's alarms and no one else's;
    an operator with the admin role sees and changes all of them."""
    mine = await create_alarm(api, "a", VM1)
    theirs = await create_alarm(api, "b", VM2)
    assert (mine["project_id"], mine["user_id"]) == ("project-a", "vnfm-a")
    listed = (await api.client.get("/v2/alarms", headers=api.who("b"))).json()
    assert [x["alarm_id"] for x in listed] == [theirs["alarm_id"]]
    url = f"/v2/alarms/{mine['alarm_id']}"
    for method, path, body in [
        ("GET", url, None),
        ("PUT", url, alarm_for(VM1, "http://127.0.0.1:1/stolen")),
        ("PUT", f"{url}/state", "alarm"),
        ("DELETE", url, None),
    ]:
        resp = await api.client.request(method, path, json=body, headers=api.who("b"))
        assert resp.status_code == 404, (method, path, resp.text)
    assert (await api.client.get(url, headers=api.who("a"))).json() == mine

    servers = (await api.client.get("/v1/servers", headers=api.who("a"))).json()
    assert servers and {v["project_id"] for v in servers} == {"project-a"}
    assert (await api.client.get("/v1/faults", headers=api.who("a"))).status_code == 403

    admin = api.who("admin")
    every = (await api.client.get("/v2/alarms", headers=admin)).json()
    assert {x["alarm_id"] for x in every} == {mine["alarm_id"], theirs["alarm_id"]}
    resp = await api.client.put(f"{url}/state", json="alarm", headers=admin)
    assert resp.status_code == 200 and resp.json() == "alarm"
    assert (await api.client.get("/v1/faults", headers=admin)).status_code == 200
    servers = (await api.client.get("/v1/servers", headers=admin)).json()
    assert {v["project_id"] for v in servers} == {"project-a", "project-b"}


@pytest.mark.parametrize("api", ["token"], indirect=True)
async def test_a_token_acts_for_its_project_whatever_the_headers_say(api: Api) -> None:
    """In token mode the token alone says who calls: identity headers from outside,
    admin role included, change nothing."""
    forged = {"X-Project-Id": "project-b", "X-User-Id": "vnfm-b", "X-Roles": "admin"}
    refused(await api.client.get("/v2/alarms", headers=forged), "X-Auth-Token")
    theirs = await create_alarm(api, "b", VM2)

    as_a = api.who("a") | forged
    resp = await api.client.post("/v2/alarms", json=alarm_for(VM1, "http://x/"), headers=as_a)
    assert resp.status_code == 201
    assert (resp.json()["project_id"], resp.json()["user_id"]) == ("project-a", "vnfm-a")
    listed = (await api.client.get("/v2/alarms", headers=as_a)).json()
    assert [x["project_id"] for x in listed] == ["project-a"]
    resp = await api.client.get(f"/v2/alarms/{theirs['alarm_id']}", headers=as_a)
    assert resp.status_code == 404
    assert (await api.client.get("/v1/faults", headers=as_a)).status_code == 403


@pytest.mark.parametrize("api", ["token"], indirect=True)
async def test_a_token_that_is_not_configured_is_refused(api: Api) -> None:
    """Unknown tokens, near misses and tokens with non-ASCII characters get a 401 (not a
    server error), and nothing is created with them."""
    body = alarm_for(VM1, "http://127.0.0.1:1/")
    for token in [b"nope", b"tok-vnfm-", b"tok-vnfm-aa", b"TOK-VNFM-A", NON_ASCII]:
        resp = await api.client.post("/v2/alarms", json=body, headers={"X-Auth-Token": token})
        refused(resp, "X-Auth-Token")
    assert (await api.client.get("/v2/alarms", headers=api.who("admin"))).json() == []


EVENT_ROUTES = [
    ("PUT", "/events", lambda e: [e]),
    ("POST", "/events", lambda e: e),
    ("POST", "/v1/event", lambda e: {"event": e}),
]


async def test_monitors_need_their_token(api: Api) -> None:
    """A fault report without a monitor's token, or with any other token (a northbound
    one included), is refused with 401 and changes nothing: no event kept, no fault, no
    owner told. The same report with the token is acted on, and each event records
    which monitor sent it."""
    alarm = await create_alarm(api, "a", VM1)
    wrong: list[dict[str, str | bytes]] = [
        {},
        {"X-Auth-Token": "not-the-monitor"},
        {"X-Auth-Token": NON_ASCII},
        {"X-Auth-Token": MONITOR_TOKEN.upper()},
        {"X-Auth-Token": "tok-operator"},
        {"X-Auth-Token": MONITOR_TOKEN + " "},
    ]
    for method, path, shape in EVENT_ROUTES:
        for headers in wrong:
            resp = await api.client.request(
                method, path, json=shape(host_down("compute1")), headers=headers
            )
            refused(resp, "X-Auth-Token")
    await api.service.bus.drain()
    admin = api.who("admin")
    assert (await api.client.get("/v1/events", headers=admin)).json() == []
    assert (await api.client.get("/v1/faults", headers=admin)).json() == []
    assert api.service.inspector.active == {}
    alarm_url = f"/v2/alarms/{alarm['alarm_id']}/state"
    assert (await api.client.get(alarm_url, headers=api.who("a"))).json() == "insufficient data"
    assert api.consumer.received == []

    for method, path, shape in EVENT_ROUTES:
        resp = await api.client.request(
            method, path, json=shape(host_down("compute1")), headers={"X-Auth-Token": MONITOR_TOKEN}
        )
        assert resp.status_code == 202, (method, path, resp.text)
    await eventually(lambda: len(api.consumer.received) == 1, what="project-a's owner told")
    assert api.consumer.received[0]["instance_id"] == VM1
    events = (await api.client.get("/v1/events", headers=admin)).json()
    assert [e["reporter"] for e in events] == [MONITOR_NAME] * len(EVENT_ROUTES)


async def test_without_monitor_tokens_the_events_api_takes_nothing(no_monitors: Api) -> None:
    """Out of the box nobody may report a fault (it would fence a host): every report is
    a 401 saying what to configure, and nothing is kept."""
    client = no_monitors.client
    for method, path, shape in EVENT_ROUTES:
        resp = await client.request(method, path, json=shape(host_down("compute1")))
        refused(resp, "X-Auth-Token")
        assert "api.monitor_tokens" in resp.json()["error"]["message"]
        resp = await client.request(
            method, path, json=shape(host_down("compute1")), headers={"X-Auth-Token": "x"}
        )
        refused(resp, "X-Auth-Token")
    assert (await client.get("/v1/events", headers=no_monitors.who("admin"))).json() == []


async def test_anonymous_monitors_only_where_turned_on(anonymous_monitors: Api) -> None:
    """With `anonymous_monitors`, a report without a token is taken and recorded as
    anonymous; a token that is not known is still refused."""
    client = anonymous_monitors.client
    assert (await client.put("/events", json=[host_down("compute1")])).status_code == 202
    resp = await client.post(
        "/v1/event", json={"event": host_down("compute2")}, headers={"X-Auth-Token": NON_ASCII}
    )
    refused(resp, "X-Auth-Token")
    events = (await client.get("/v1/events", headers=anonymous_monitors.who("admin"))).json()
    assert [(e["hostname"], e["reporter"]) for e in events] == [("compute1", "anonymous")]
