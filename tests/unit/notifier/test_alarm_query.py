"""Aodh's queries over the HTTP API, on SQLite and PostgreSQL: the complex query over
alarms (in the index) and over history (in the database), the simple query's sort and
marker, capabilities, deleted alarms' history, and the 400s that name what is wrong."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from opendoctor.core.query import MAX_DEPTH, MAX_IN, MAX_ORDERBY, MAX_TERMS

from .helpers import ADMIN, PROJECT_A, PROJECT_B, alarm_body


async def create(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> Any:
    resp = await client.post("/v2/alarms", json=alarm_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def query(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    filter: Any = None,
    orderby: Any = None,
    limit: int | None = None,
    path: str = "/v2/query/alarms",
) -> list[Any]:
    body: dict[str, Any] = {}
    if filter is not None:
        body["filter"] = json.dumps(filter)
    if orderby is not None:
        body["orderby"] = json.dumps(orderby)
    if limit is not None:
        body["limit"] = limit
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status_code == 200, (body, resp.text)
    answer: list[Any] = resp.json()
    return answer


def names(alarms: list[Any]) -> list[str]:
    return [a["name"] for a in alarms]


@pytest.fixture
async def three(client: httpx.AsyncClient) -> list[Any]:
    """vm-1 (critical), vm-2 (low, disabled), host-x (moderate): project-a's, in order."""
    return [
        await create(client, PROJECT_A, name="vm-1", severity="critical"),
        await create(client, PROJECT_A, name="vm-2", severity="low", enabled=False),
        await create(client, PROJECT_A, name="host-x", severity="moderate"),
    ]


async def test_every_operator_of_the_complex_query(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    async def found(filter: Any) -> list[str]:
        return sorted(names(await query(client, PROJECT_A, filter)))

    assert await found({"=": {"name": "vm-1"}}) == ["vm-1"]
    assert await found({"!=": {"severity": "low"}}) == ["host-x", "vm-1"]
    assert await found({"=": {"enabled": False}}) == ["vm-2"]
    assert await found({"in": {"severity": ["low", "moderate"]}}) == ["host-x", "vm-2"]
    assert await found({"=~": {"name": "^vm-"}}) == ["vm-1", "vm-2"]
    assert await found({"not": {"=~": {"name": "^vm-"}}}) == ["host-x"]
    assert await found({"and": [{"=~": {"name": "^vm"}}, {"=": {"enabled": True}}]}) == ["vm-1"]
    either = {"or": [{"=": {"name": "vm-2"}}, {"=": {"severity": "moderate"}}]}
    assert await found(either) == ["host-x", "vm-2"]
    # Operators in any case, and Aodh's other spellings.
    assert await found({"AND": [{"=": {"name": "vm-1"}}, {"Not": {"=": {"name": "x"}}}]}) == [
        "vm-1"
    ]
    # Times compare as times: ISO 8601 text, UTC when no zone is given.
    second = three[1]["timestamp"]
    assert await found({">": {"timestamp": second}}) == ["host-x"]
    assert await found({">=": {"timestamp": second}}) == ["host-x", "vm-2"]
    assert await found({"=<": {"timestamp": second}}) == ["vm-1", "vm-2"]
    assert await found({"<": {"timestamp": second + "+00:00"}}) == ["vm-1"]
    assert await found({"<": {"state_timestamp": "2000-01-01T00:00:00"}}) == []
    # Aodh's aliases for the owner.
    assert await found({"=": {"project": "project-a"}}) == ["host-x", "vm-1", "vm-2"]
    assert await found({"=": {"user": "nobody"}}) == []


async def test_orderby_and_limit(client: httpx.AsyncClient, three: list[Any]) -> None:
    assert names(await query(client, PROJECT_A)) == ["host-x", "vm-2", "vm-1"]  # newest first
    # Severity sorts by its meaning, not alphabetically.
    by_severity = await query(client, PROJECT_A, orderby=[{"severity": "desc"}])
    assert names(by_severity) == ["vm-1", "host-x", "vm-2"]
    by_name = await query(client, PROJECT_A, orderby=[{"name": "ASC"}], limit=2)
    assert names(by_name) == ["host-x", "vm-1"]
    two_keys = [{"enabled": "asc"}, {"timestamp": "desc"}]
    assert names(await query(client, PROJECT_A, orderby=two_keys)) == ["vm-2", "host-x", "vm-1"]


async def test_a_project_queries_its_own_alarms_only(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    theirs = await create(client, PROJECT_B, name="vm-1")
    assert [a["alarm_id"] for a in await query(client, PROJECT_B)] == [theirs["alarm_id"]]
    assert names(await query(client, PROJECT_B, {"=": {"name": "vm-1"}})) == ["vm-1"]
    # Naming another project is refused, not answered with an empty list.
    for filter in [
        {"=": {"project_id": "project-a"}},
        {"or": [{"=": {"name": "x"}}, {"in": {"project": ["project-b", "project-a"]}}]},
    ]:
        resp = await client.post(
            "/v2/query/alarms", json={"filter": json.dumps(filter)}, headers=PROJECT_B
        )
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["errors"][0]["field"] == "filter"
    every = await query(client, ADMIN, {"=": {"name": "vm-1"}})
    assert sorted(a["project_id"] for a in every) == ["project-a", "project-b"]
    assert names(await query(client, ADMIN, {"=": {"project_id": "project-b"}})) == ["vm-1"]


def nested(depth: int) -> Any:
    tree: Any = {"=": {"name": "x"}}
    for _ in range(depth):
        tree = {"not": tree}
    return tree


BAD_QUERIES: list[tuple[dict[str, Any], str, str]] = [
    ({"filter": "{"}, "filter", "not valid JSON"),
    ({"filter": "[]"}, "filter", "exactly one operator"),
    ({"filter": '{"=": {"name": "a"}, "!=": {"name": "b"}}'}, "filter", "exactly one"),
    ({"filter": '{"~": {"name": "a"}}'}, "filter", "unknown operator '~'"),
    ({"filter": '{"=": {"colour": "red"}}'}, "filter", "cannot filter on 'colour'"),
    ({"filter": '{"=": {"alarm_actions": "x"}}'}, "filter", "cannot filter on"),
    ({"filter": '{"and": [{"=": {"name": "a"}}]}'}, "filter", "at least two"),
    ({"filter": '{"=": {"name": 3}}'}, "filter", "takes a string"),
    ({"filter": '{"=": {"name": null}}'}, "filter", "takes a string"),
    ({"filter": '{"=": {"enabled": "maybe"}}'}, "filter", "true or false"),
    ({"filter": '{">": {"timestamp": "yesterday"}}'}, "filter", "not an ISO 8601 time"),
    ({"filter": '{"in": {"name": []}}'}, "filter", f"1 to {MAX_IN}"),
    ({"filter": '{"in": {"name": "a"}}'}, "filter", "takes a list"),
    ({"filter": '{"=~": {"enabled": "t"}}'}, "filter", "text fields only"),
    ({"filter": '{"=~": {"name": "(a)\\\\1"}}'}, "filter", "no backreferences"),
    ({"filter": json.dumps(nested(MAX_DEPTH + 1))}, "filter", "deeper than"),
    (
        {"filter": json.dumps({"or": [{"=": {"name": str(i)}} for i in range(MAX_TERMS + 1)]})},
        "filter",
        f"at most {MAX_TERMS} comparisons",
    ),
    ({"filter": json.dumps({"in": {"name": ["a"] * (MAX_IN + 1)}})}, "filter", "1 to"),
    ({"filter": "x" * 20_000}, "filter", "at most"),
    ({"orderby": '{"name": "asc"}'}, "orderby", "a list"),
    ({"orderby": '[{"rule": "asc"}]'}, "orderby", "cannot sort by 'rule'"),
    ({"orderby": '[{"name": "up"}]'}, "orderby", "asc or desc"),
    ({"orderby": '[{"name": "asc"}, {"name": "desc"}]'}, "orderby", "named twice"),
    (
        {"orderby": json.dumps([{"name": "asc"}] * (MAX_ORDERBY + 1))},
        "orderby",
        f"at most {MAX_ORDERBY}",
    ),
    ({"limit": 0}, "limit", "greater than or equal to 1"),
    ({"limit": 10_001}, "limit", "less than or equal to"),
    ({"colour": "red"}, "colour", "Extra inputs"),
]


@pytest.mark.parametrize(("body", "field", "problem"), BAD_QUERIES)
async def test_a_bad_query_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, problem: str
) -> None:
    resp = await client.post("/v2/query/alarms", json=body, headers=PROJECT_A)
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["error"]["errors"]
    assert error["field"] == field
    assert problem in error["problem"], error


async def test_history_query_runs_over_every_change_deleted_alarms_included(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    vm1, vm2, _ = three
    await client.put(f"/v2/alarms/{vm1['alarm_id']}/state", json="alarm", headers=PROJECT_A)
    assert (await client.delete(f"/v2/alarms/{vm2['alarm_id']}", headers=PROJECT_A)).is_success
    theirs = await create(client, PROJECT_B, name="theirs")
    path = "/v2/query/alarms/history"

    mine = await query(client, PROJECT_A, path=path)
    assert [h["type"] for h in mine] == [  # newest first
        "deletion",
        "state transition",
        "creation",
        "creation",
        "creation",
    ]
    assert {h["on_behalf_of"] for h in mine} == {"project-a"}
    deleted = await query(client, PROJECT_A, {"=": {"alarm_id": vm2["alarm_id"]}}, path=path)
    assert [h["type"] for h in deleted] == ["deletion", "creation"]
    transitions = await query(client, PROJECT_A, {"=": {"type": "state transition"}}, path=path)
    assert json.loads(transitions[0]["detail"])["state"] == "alarm"
    oldest = await query(client, PROJECT_A, orderby=[{"timestamp": "asc"}], limit=2, path=path)
    assert [h["alarm_id"] for h in oldest] == [vm1["alarm_id"], vm2["alarm_id"]]
    later = {"and": [{">": {"timestamp": vm2["timestamp"]}}, {"!=": {"type": "deletion"}}]}
    assert len(await query(client, PROJECT_A, later, path=path)) == 2

    # The other project's changes are not shown, nor may it ask for them...
    assert [h["alarm_id"] for h in await query(client, PROJECT_B, path=path)] == [
        theirs["alarm_id"]
    ]
    refused = await client.post(
        path, json={"filter": '{"=": {"on_behalf_of": "project-a"}}'}, headers=PROJECT_B
    )
    assert refused.status_code == 403
    # ...but an admin sees every project's, deleted alarms' included.
    every = await query(client, ADMIN, {"=": {"type": "deletion"}}, path=path)
    assert [h["alarm_id"] for h in every] == [vm2["alarm_id"]]
    assert len(await query(client, ADMIN, path=path)) == 6


async def test_regular_expressions_are_not_served_on_history(client: httpx.AsyncClient) -> None:
    body = {"filter": '{"=~": {"type": "^cre"}}'}
    resp = await client.post("/v2/query/alarms/history", json=body, headers=PROJECT_A)
    assert resp.status_code == 400
    assert "not on history" in resp.json()["error"]["message"]


async def test_an_admin_reads_a_deleted_alarms_history(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    gone = three[0]["alarm_id"]
    url = f"/v2/alarms/{gone}/history"
    assert (await client.delete(f"/v2/alarms/{gone}", headers=PROJECT_A)).is_success
    history = (await client.get(url, headers=ADMIN)).json()
    assert [h["type"] for h in history] == ["deletion", "creation"]
    assert (await client.get(url, headers=PROJECT_A)).status_code == 404  # as Aodh
    never = "00000000-0000-0000-0000-00000000dead"
    assert (await client.get(f"/v2/alarms/{never}/history", headers=ADMIN)).status_code == 404


async def test_list_sorts_pages_and_filters_as_aodhs_simple_query(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    await create(client, PROJECT_B, name="theirs")

    async def listed(params: list[tuple[str, str]], who: dict[str, str] = PROJECT_A) -> Any:
        resp = await client.get("/v2/alarms", params=params, headers=who)
        assert resp.status_code == 200, resp.text
        return names(resp.json())

    assert await listed([("sort", "name:asc")]) == ["host-x", "vm-1", "vm-2"]
    assert await listed([("sort", "severity:desc")]) == ["vm-1", "host-x", "vm-2"]
    assert await listed([("sort", "enabled"), ("sort", "name:desc")]) == ["vm-2", "vm-1", "host-x"]
    first = (await client.get("/v2/alarms?sort=name&limit=2", headers=PROJECT_A)).json()
    assert names(first) == ["host-x", "vm-1"]
    rest = [("sort", "name"), ("limit", "2"), ("marker", first[-1]["alarm_id"])]
    assert await listed(rest) == ["vm-2"]
    assert await listed([("q.field", "repeat_actions"), ("q.value", "false")]) == [
        "host-x",
        "vm-2",
        "vm-1",
    ]
    since = [("q.field", "timestamp"), ("q.value", three[2]["timestamp"])]
    assert await listed(since) == ["host-x"]
    # An admin lists every project's alarms, or with all_projects=false their own only.
    assert len(await listed([], ADMIN)) == 4
    assert await listed([("q.field", "all_projects"), ("q.value", "false")], ADMIN) == []
    assert len(await listed([("q.field", "all_projects"), ("q.value", "true")], ADMIN)) == 4

    for params, status, field in [
        ([("sort", "rule")], 400, "sort"),
        ([("sort", "name:sideways")], 400, "sort"),
        ([("marker", "nope")], 400, "marker"),
        ([("q.field", "timestamp"), ("q.value", "noon")], 400, "q.value"),
        ([("q.field", "all_projects"), ("q.value", "true")], 403, "q.value"),
        ([("q.field", "project_id"), ("q.value", "project-b")], 403, "q.value"),
        ([("q.field", "name"), ("q.value", "x")] * (MAX_TERMS + 1), 400, "q"),
    ]:
        resp = await client.get("/v2/alarms", params=params, headers=PROJECT_A)
        assert resp.status_code == status, (params, resp.text)
        assert resp.json()["error"]["errors"][0]["field"] == field


async def test_one_alarms_history_pages_sorts_and_filters(
    client: httpx.AsyncClient, three: list[Any]
) -> None:
    url = f"/v2/alarms/{three[0]['alarm_id']}/history"
    for state in ("alarm", "ok", "alarm"):
        await client.put(f"/v2/alarms/{three[0]['alarm_id']}/state", json=state, headers=PROJECT_A)

    async def history(params: list[tuple[str, str]]) -> Any:
        resp = await client.get(url, params=params, headers=PROJECT_A)
        assert resp.status_code == 200, resp.text
        return resp.json()

    every = await history([])
    assert [h["type"] for h in every] == ["state transition"] * 3 + ["creation"]
    pages, marker = [], None
    while True:
        params = [("sort", "timestamp:asc"), ("limit", "3")]
        page = await history(params + ([("marker", marker)] if marker else []))
        if not page:
            break
        pages.append(page)
        marker = page[-1]["event_id"]
    assert [len(p) for p in pages] == [3, 1]
    assert [h["event_id"] for p in pages for h in p] == [h["event_id"] for h in reversed(every)]
    made = [("q.field", "type"), ("q.value", "creation")]
    assert [h["type"] for h in await history(made)] == ["creation"]
    after = [("q.field", "timestamp"), ("q.op", "gt"), ("q.value", every[1]["timestamp"])]
    assert [h["event_id"] for h in await history(after)] == [every[0]["event_id"]]
    for params, field in [
        ([("q.field", "type"), ("q.op", "gt"), ("q.value", "x")], "q.op"),
        ([("q.field", "detail"), ("q.value", "x")], "q.field"),
        ([("marker", "not-an-event")], "marker"),
        ([("sort", "detail")], "sort"),
    ]:
        resp = await client.get(url, params=params, headers=PROJECT_A)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["error"]["errors"][0]["field"] == field


async def test_capabilities(client: httpx.AsyncClient) -> None:
    for path in ("/v2/capabilities", "/v2/capabilities/"):
        resp = await client.get(path, headers=PROJECT_A)
        assert resp.status_code == 200
        assert resp.json() == {
            "api": {
                "alarms:query:simple": True,
                "alarms:query:complex": True,
                "alarms:history:query:simple": True,
                "alarms:history:query:complex": True,
            },
            "alarm_storage": {"storage:production_ready": True},
        }


async def test_other_alarm_types_are_a_400_saying_only_event_alarms_are_served(
    client: httpx.AsyncClient,
) -> None:
    for kind, rule in [
        ("threshold", {"meter_name": "cpu_util", "threshold": 80}),
        ("gnocchi_resources_threshold", {"metric": "cpu", "threshold": 80}),
        ("composite", {"or": []}),
    ]:
        body = {"name": "x", "type": kind, f"{kind}_rule": rule}
        resp = await client.post("/v2/alarms", json=body, headers=PROJECT_A)
        assert resp.status_code == 400, resp.text
        [error] = resp.json()["error"]["errors"]  # only the reason, no "event_rule missing"
        assert error["field"] == "type"
        assert "only 'event' alarms are served" in error["problem"]
