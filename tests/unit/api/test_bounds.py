"""Bodies and headers no route could handle are refused with a 400 naming them, before
anything happens; what is inside the bounds goes through."""

from __future__ import annotations

import time

import orjson
import pytest

from opendoctor.api.bounds import MAX_DEPTH, too_deep
from tests.integration.pipeline.conftest import alarm_for, host_down
from tests.unit.api.conftest import MONITOR_TOKEN, Api

VM1 = "00000000-0000-0000-0000-000000000001"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def refused(status: int, body: dict[str, object], field: str) -> None:
    assert status == 400, body
    error = body["error"]
    assert isinstance(error, dict)
    assert [e["field"] for e in error["errors"]] == [field]


@pytest.mark.parametrize("api", ["trusted-headers"], indirect=True)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 950, 100_000])
async def test_json_nested_too_deep_is_refused_by_every_route(api: Api, depth: int) -> None:
    """Deep enough, such a body was a 500 from the parser or a refused write after the
    host was already forced down: now a 400, and nothing is done."""
    admin = api.who("admin")
    deep = nested(depth)
    event = host_down("compute1")
    event["details"]["extra"] = "MARK"
    event_body = orjson.dumps([event]).replace(b'"MARK"', deep)
    alarm_body = orjson.dumps({**alarm_for(VM1, "http://vnfm.example/"), "description": "MARK"})
    alarm_body = alarm_body.replace(b'"MARK"', deep)
    topology = b'{"entities": ' + deep + b"}"
    monitor = {"X-Auth-Token": MONITOR_TOKEN}
    for content_type in ("application/json", "text/plain"):
        calls = [
            ("PUT", "/events", event_body, monitor),
            ("POST", "/v1/event", event_body, monitor),
            ("POST", "/v2/alarms", alarm_body, api.who("a")),
            ("POST", "/v1/topology", topology, admin),
        ]
        for method, path, body, headers in calls:
            resp = await api.client.request(
                method, path, content=body, headers={**headers, "content-type": content_type}
            )
            refused(resp.status_code, resp.json(), "body")
    await api.service.bus.drain()
    assert (await api.client.get("/v1/events", headers=admin)).json() == []
    assert (await api.client.get("/v2/alarms", headers=admin)).json() == []
    assert api.service.inspector.active == {}


@pytest.mark.parametrize("api", ["trusted-headers"], indirect=True)
async def test_json_within_the_bounds_goes_through(api: Api) -> None:
    event = host_down("compute1")
    event["details"]["extra"] = {"a": [[[[{"b": "[[[[ not brackets ]]]]"}]]]]}
    resp = await api.client.put("/events", json=[event], headers={"X-Auth-Token": MONITOR_TOKEN})
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("inside", "deep"),
    [
        (r'"[[[["', False),  # brackets in a string do not nest
        (r'"a\\",[[[[', True),  # an escaped backslash; the quote after it ends the string
        (r'"a\\\"[[[["', False),  # an escaped backslash, then an escaped quote: still in
        (r'"\\\\",[[[[', True),  # two escaped backslashes, then the string's end
    ],
)
def test_the_depth_check_reads_strings_as_a_parser_does(inside: str, deep: bool) -> None:
    # MAX_DEPTH - 2 levels around `inside`: the four brackets in it tip it over only when
    # they are outside every string.
    depth = MAX_DEPTH - 2
    closing = inside.count("[") if deep else 0
    body = ("[" * depth + inside + "]" * closing + "]" * depth).encode()
    orjson.loads(body)  # valid JSON, deeper than MAX_DEPTH or not
    assert too_deep(body) is deep


def test_the_depth_check_costs_little_on_a_large_body() -> None:
    """A 1 MB body of many small objects, and one of long strings full of brackets."""
    many = orjson.dumps([{"key": f"v{i}", "n": [i, {"m": [i]}]} for i in range(25_000)])
    strings = orjson.dumps(["[{" * 200_000, "]}" * 200_000])
    for body in (many, strings):
        started = time.monotonic()
        assert not too_deep(body)
        assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("api", ["trusted-headers"], indirect=True)
@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Project-Id", "p" * 300),
        ("X-User-Id", "u" * 256),
        ("X-Roles", "admin," * 200),
        ("X-User-Id", "vnfm\x7f"),
    ],
)
async def test_identity_headers_no_store_could_keep_are_refused(
    api: Api, header: str, value: str
) -> None:
    headers = {**api.who("a"), header: value}
    body = alarm_for(VM1, "http://vnfm.example/")
    resp = await api.client.post("/v2/alarms", json=body, headers=headers)
    refused(resp.status_code, resp.json(), header)
    assert (await api.client.get("/v2/alarms", headers=api.who("admin"))).json() == []
