"""The alarm body: defaults, and a 400 naming the field for every kind of bad input."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from opendoctor.notifier.rules import AlarmBody

from .helpers import PROJECT_A, alarm_body


def with_query(*terms: dict[str, Any]) -> dict[str, Any]:
    return alarm_body(event_rule={"event_type": "compute.instance.update", "query": list(terms)})


def with_event_type(event_type: Any) -> dict[str, Any]:
    return alarm_body(event_rule={"event_type": event_type, "query": []})


def without(key: str) -> dict[str, Any]:
    body = alarm_body()
    del body[key]
    return body


def _q(**term: Any) -> dict[str, Any]:
    return {"field": "traits.instance_id", "op": "eq", "value": "x", **term}


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("no name", without("name"), "name"),
    ("empty name", alarm_body(name=""), "name"),
    ("no type", without("type"), "type"),
    ("threshold type", alarm_body(type="threshold"), "type"),
    ("no event_rule", without("event_rule"), "event_rule"),
    ("empty event_type", with_event_type(""), "event_rule.event_type"),
    ("event_type with space", with_event_type("compute.instance update"), "event_rule.event_type"),
    ("event_type with tab", with_event_type("compute.\tx"), "event_rule.event_type"),
    ("unbalanced [", with_event_type("compute.[abc"), "event_rule.event_type"),
    ("unbalanced [!]", with_event_type("compute.[!]"), "event_rule.event_type"),
    ("event_type not a string", with_event_type(5), "event_rule.event_type"),
    ("unknown op", with_query(_q(op="like")), "event_rule.query[0].op"),
    ("op in capitals", with_query(_q(), _q(op="EQ")), "event_rule.query[1].op"),
    ("unknown type", with_query(_q(type="long")), "event_rule.query[0].type"),
    ("integer value", with_query(_q(type="integer", value="abc")), "event_rule.query[0].value"),
    ("integer 1.5", with_query(_q(type="integer", value="1.5")), "event_rule.query[0].value"),
    ("float value", with_query(_q(type="float", value="one")), "event_rule.query[0].value"),
    ("float nan", with_query(_q(type="float", value="nan")), "event_rule.query[0].value"),
    ("boolean value", with_query(_q(type="boolean", value="maybe")), "event_rule.query[0].value"),
    ("datetime value", with_query(_q(type="datetime", value="soon")), "event_rule.query[0].value"),
    ("null value", with_query(_q(value=None)), "event_rule.query[0].value"),
    ("list value", with_query(_q(value=[1])), "event_rule.query[0].value"),
    ("no value", with_query({"field": "traits.x"}), "event_rule.query[0].value"),
    ("bare trait field", with_query(_q(field="instance_id")), "event_rule.query[0].field"),
    ("empty trait name", with_query(_q(field="traits.")), "event_rule.query[0].field"),
    ("other field", with_query(_q(field="message_id")), "event_rule.query[0].field"),
    ("unknown term key", with_query(_q(negate=True)), "event_rule.query[0].negate"),
    ("ftp action", alarm_body(alarm_actions=["ftp://host/x"]), "alarm_actions[0]"),
    ("mailto ok action", alarm_body(ok_actions=["http://a/", "mailto:x@y"]), "ok_actions[1]"),
    (
        "not a url",
        alarm_body(insufficient_data_actions=["consumer"]),
        "insufficient_data_actions[0]",
    ),
    ("http without host", alarm_body(alarm_actions=["http:///failure"]), "alarm_actions[0]"),
    ("bad port", alarm_body(alarm_actions=["http://h:99999/"]), "alarm_actions[0]"),
    ("actions not a list", alarm_body(alarm_actions="http://h/"), "alarm_actions"),
    # The egress policy: what only opendoctor could reach is no tenant's to call.
    (
        "cloud metadata",
        alarm_body(alarm_actions=["http://169.254.169.254/latest/meta-data/"]),
        "alarm_actions[0]",
    ),
    (
        "the lab's API on loopback",
        alarm_body(ok_actions=["http://a/", "http://127.0.0.1:8700/hosts/compute2/fail"]),
        "ok_actions[1]",
    ),
    (
        "localhost",
        alarm_body(insufficient_data_actions=["http://localhost:8700/"]),
        "insufficient_data_actions[0]",
    ),
    ("private network", alarm_body(alarm_actions=["https://10.0.0.7/hook"]), "alarm_actions[0]"),
    (
        "broker without credentials",
        alarm_body(alarm_actions=["amqp://mq.example/?exchange=x&routing_key=k"]),
        "alarm_actions[0]",
    ),
    ("severity", alarm_body(severity="urgent"), "severity"),
    ("state", alarm_body(state="broken"), "state"),
    ("enabled", alarm_body(enabled="sometimes"), "enabled"),
    ("time constraints", alarm_body(time_constraints=[{"name": "x"}]), "time_constraints"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_is_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v2/alarms", json=body, headers=PROJECT_A)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["status"] == 400
    assert [e["field"] for e in error["errors"]] == [field]
    assert field in error["message"]


async def test_an_action_the_policy_refuses_changes_nothing(client: httpx.AsyncClient) -> None:
    alarm = (await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)).json()
    metadata = alarm_body(alarm_actions=["http://169.254.169.254/"])
    resp = await client.put(f"/v2/alarms/{alarm['alarm_id']}", json=metadata, headers=PROJECT_A)
    assert resp.status_code == 400
    listed = (await client.get("/v2/alarms", headers=PROJECT_A)).json()
    assert [a["alarm_actions"] for a in listed] == [alarm["alarm_actions"]]


async def test_bad_body_on_put_is_400_too(client: httpx.AsyncClient) -> None:
    alarm = (await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)).json()
    bad = with_query(_q(op="like"))
    resp = await client.put(f"/v2/alarms/{alarm['alarm_id']}", json=bad, headers=PROJECT_A)
    assert resp.status_code == 400
    assert resp.json()["error"]["errors"][0]["field"] == "event_rule.query[0].op"


async def test_unsupported_type_says_so(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v2/alarms", json=alarm_body(type="gnocchi_resources_threshold"), headers=PROJECT_A
    )
    assert "not supported" in resp.json()["error"]["message"]
    assert "'event'" in resp.json()["error"]["message"]


async def test_malformed_json_and_non_object_are_400(client: httpx.AsyncClient) -> None:
    headers = {**PROJECT_A, "content-type": "application/json"}
    resp = await client.post("/v2/alarms", content=b"{not json", headers=headers)
    assert resp.status_code == 400
    resp = await client.post("/v2/alarms", json=["a list"], headers=PROJECT_A)
    assert resp.status_code == 400


def test_defaults() -> None:
    body = AlarmBody.model_validate(
        {"name": "n", "type": "event", "event_rule": {"query": [{"field": "traits.a", "value": 5}]}}
    )
    assert body.event_rule.event_type == "*"
    term = body.event_rule.query[0]
    assert (term.op, term.type, term.value) == ("eq", "", "5")
    assert body.severity == "low"
    assert body.enabled is True
    assert body.repeat_actions is False
    assert body.state is None
    assert body.alarm_actions == body.ok_actions == body.insufficient_data_actions == []
    alarm = body.to_alarm("id", "p", "u", "insufficient data", 0.0)
    assert alarm.description == "Alarm when * event occurred."


@pytest.mark.parametrize(
    ("raw", "text"), [(True, "true"), (False, "false"), (7, "7"), (2.5, "2.5"), ("x", "x")]
)
def test_query_values_are_kept_as_text(raw: Any, text: str) -> None:
    body = AlarmBody.model_validate(with_query(_q(value=raw)))
    assert body.event_rule.query[0].value == text


@pytest.mark.parametrize(
    "pattern",
    ["*", "compute.*", "compute.instance.?pdate", "[ch]ompute.x", "[!x]*", "a[]]b", "a[!]]b", "x]"],
)
def test_good_patterns(pattern: str) -> None:
    AlarmBody.model_validate(with_event_type(pattern))


def test_actions_accept_http_https_log_and_drop_duplicates() -> None:
    urls = ["http://a:80/x", "https://b/y?z=1", "log://", "http://a:80/x"]
    body = AlarmBody.model_validate(alarm_body(alarm_actions=urls))
    assert body.alarm_actions == urls[:3]


def test_unknown_top_level_keys_are_ignored() -> None:
    # Aodh clients PUT back what they GET, read-only fields included.
    body = AlarmBody.model_validate(
        alarm_body(
            alarm_id="x", timestamp="2024-01-01T00:00:00", state_reason="r", time_constraints=[]
        )
    )
    assert body.name == "vm-failure"


def test_body_is_not_mutated_by_validation() -> None:
    raw = alarm_body()
    before = copy.deepcopy(raw)
    AlarmBody.model_validate(raw)
    assert raw == before
