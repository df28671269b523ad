"""The Mistral-compatible routes (`/v2/workflows`, `/v2/executions`, `/v2/tasks`,
`/v2/action_executions`, `/v2/actions`) on an in-process service: shapes as Mistral's
clients read them, errors naming the field and the line, tenancy, paging, and state
changes. A refused request changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.integration.pipeline.conftest import ADMIN, Running, lab_vim, serving, settings_for
from tests.workflow_texts import GREET, SLOW

MEMBER = {"X-Project-Id": "project-a", "X-User-Id": "vnfm-a", "X-Roles": "member"}
OTHER = {"X-Project-Id": "project-b", "X-User-Id": "vnfm-b", "X-Roles": "member"}
TEXT = {"content-type": "text/plain"}

BROKEN = """\
version: '2.0'
broken:
  tasks:
    first:
      action: no.such_action
"""


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(settings_for(tmp_path), lab_vim()) as r:
        yield r


async def add(r: Running, text: str, headers: dict[str, str] = MEMBER, **query: str) -> Any:
    resp = await r.client.post(
        "/v2/workflows", content=text, params=query, headers={**headers, **TEXT}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["workflows"]


async def start(r: Running, name: str, given: Any, headers: dict[str, str] = MEMBER) -> Any:
    body = {"workflow_name": name, "input": json.dumps(given), "description": "a test"}
    resp = await r.client.post("/v2/executions", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def state_of(r: Running, execution_id: str, headers: dict[str, str] = MEMBER) -> str:
    resp = await r.client.get(f"/v2/executions/{execution_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    state: str = resp.json()["state"]
    return state


def problem(resp: Any) -> tuple[str, str]:
    error = resp.json()["error"]["errors"][0]
    assert resp.json()["faultstring"]  # what python-mistralclient shows
    return error["field"], error["problem"]


async def test_workflows_are_added_listed_shown_updated_and_deleted(api: Running) -> None:
    [wf] = await add(api, GREET)
    assert wf["name"] == "greet" and wf["scope"] == "private"
    assert wf["input"] == 'who, greeting="hello"' and wf["project_id"] == "project-a"
    assert wf["definition"] == GREET
    assert len(wf["created_at"]) == len("2024-01-01 12:00:00")
    listed = (await api.client.get("/v2/workflows", headers=MEMBER)).json()["workflows"]
    names = [w["name"] for w in listed]
    assert "greet" in names and "opendoctor.vm_recovery" in names  # the shipped ones too
    for ident in ("greet", wf["id"]):
        shown = await api.client.get(f"/v2/workflows/{ident}", headers=MEMBER)
        assert shown.status_code == 200 and shown.json()["id"] == wf["id"]

    changed = GREET.replace("greeting: hello", "greeting: hi")
    resp = await api.client.put("/v2/workflows", content=changed, headers={**MEMBER, **TEXT})
    assert resp.status_code == 200, resp.text
    [updated] = resp.json()["workflows"]
    assert updated["id"] == wf["id"] and updated["input"] == 'who, greeting="hi"'
    by_id = await api.client.put(
        f"/v2/workflows/{wf['id']}", content=GREET, headers={**MEMBER, **TEXT}
    )
    assert by_id.status_code == 200 and by_id.json()["input"] == 'who, greeting="hello"'

    again = await api.client.post("/v2/workflows", content=GREET, headers={**MEMBER, **TEXT})
    assert again.status_code == 409 and problem(again)[0] == "definition"
    resp = await api.client.delete("/v2/workflows/greet", headers=MEMBER)
    assert resp.status_code == 204
    gone = await api.client.get("/v2/workflows/greet", headers=MEMBER)
    assert gone.status_code == 404


async def test_validation_names_the_line_and_stores_nothing(api: Running) -> None:
    resp = await api.client.post("/v2/workflows/validate", content=BROKEN, headers=TEXT | MEMBER)
    assert resp.status_code == 200
    body = resp.json()
    assert body["valid"] is False and body["error"].startswith("line 5:")
    assert "no.such_action" in body["error"]
    ok = await api.client.post("/v2/workflows/validate", content=GREET, headers=TEXT | MEMBER)
    assert ok.json() == {"valid": True}

    resp = await api.client.post("/v2/workflows", content=BROKEN, headers=TEXT | MEMBER)
    assert resp.status_code == 400
    field, says = problem(resp)
    assert field == "definition" and says.startswith("line 5:")
    bad_yaml = "version: '2.0'\nx:\n  tasks: [\n"
    resp = await api.client.post("/v2/workflows", content=bad_yaml, headers=TEXT | MEMBER)
    assert resp.status_code == 400 and "line" in problem(resp)[1]
    empty = await api.client.post("/v2/workflows", content=b"  ", headers=TEXT | MEMBER)
    assert empty.status_code == 400 and problem(empty)[0] == "body"
    scope = await api.client.post(
        "/v2/workflows", content=GREET, params={"scope": "world"}, headers=TEXT | MEMBER
    )
    assert scope.status_code == 400 and problem(scope)[0] == "scope"
    listed = (await api.client.get("/v2/workflows?name=broken", headers=MEMBER)).json()
    assert listed["workflows"] == []


async def test_an_execution_runs_and_shows_its_tasks_and_actions(api: Running) -> None:
    await add(api, GREET)
    execution = await start(api, "greet", {"who": "world"})
    assert execution["workflow_name"] == "greet" and execution["description"] == "a test"
    assert json.loads(execution["input"]) == {"who": "world"}
    assert execution["project_id"] == "project-a" and execution["task_execution_id"] is None
    await eventually(lambda: _is(api, execution["id"], "SUCCESS"), what="the execution")
    done = (await api.client.get(f"/v2/executions/{execution['id']}", headers=MEMBER)).json()
    assert json.loads(done["output"]) == {"said": "hello, world"}
    # Beside Mistral's fields, the task graph the dashboard draws.
    assert done["graph"]["type"] == "direct"
    assert [t["name"] for t in done["graph"]["tasks"]] == ["say", "rest"]
    assert done["graph"]["transitions"] == [
        {"source": "say", "target": "rest", "on": "on-success", "guard": None}
    ]

    tasks = await api.client.get(f"/v2/executions/{execution['id']}/tasks", headers=MEMBER)
    by_name = {t["name"]: t for t in tasks.json()["tasks"]}
    assert set(by_name) == {"say", "rest"}
    say = by_name["say"]
    assert say["state"] == "SUCCESS" and json.loads(say["result"]) == "hello, world"
    assert json.loads(say["published"]) == {"said": "hello, world"}
    assert say["workflow_execution_id"] == execution["id"] and say["type"] == "ACTION"
    same = (await api.client.get(f"/v2/tasks?workflow_execution_id={execution['id']}",
                                 headers=MEMBER)).json()["tasks"]  # fmt: skip
    assert {t["id"] for t in same} == {t["id"] for t in by_name.values()}
    one = (await api.client.get(f"/v2/tasks/{say['id']}", headers=MEMBER)).json()
    assert one["name"] == "say"
    newest = await api.client.get(
        f"/v2/executions/{execution['id']}/tasks",
        params={"sort_dirs": "desc", "limit": 1},
        headers=MEMBER,
    )
    assert [t["name"] for t in newest.json()["tasks"]] == ["rest"]
    older = (await api.client.get(newest.json()["next"], headers=MEMBER)).json()
    assert [t["name"] for t in older["tasks"]] == ["say"]
    assert older["tasks"][0]["workflow_namespace"] == ""

    actions = await api.client.get(f"/v2/tasks/{say['id']}/action_executions", headers=MEMBER)
    [action] = actions.json()["action_executions"]
    assert action["name"] == "std.echo" and action["state"] == "SUCCESS"
    assert json.loads(action["output"]) == {"result": "hello, world"}
    assert action["task_name"] == "say" and action["workflow_name"] == "greet"
    shown = await api.client.get(f"/v2/action_executions/{action['id']}", headers=MEMBER)
    assert shown.json()["id"] == action["id"]
    filtered = await api.client.get(
        "/v2/action_executions", params={"task_execution_id": say["id"]}, headers=MEMBER
    )
    assert [a["id"] for a in filtered.json()["action_executions"]] == [action["id"]]


async def _is(r: Running, execution_id: str, state: str) -> bool:
    return await state_of(r, execution_id) == state


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"workflow_name": "greet", "input": "{}"}, "input", "missing input: who"),
        ({"workflow_name": "greet", "input": '{"who": 1, "x": 2}'}, "input", "unexpected"),
        ({"workflow_name": "greet", "input": "{not json"}, "input", "not JSON"),
        ({"workflow_name": "greet", "input": "[1]"}, "input", "JSON object"),
        ({"workflow_name": "greet", "params": "3"}, "params", "JSON object"),
        ({"workflow_name": "greet", "input": "[" * 5000}, "input", "deeper than"),
        ({"input": '{"who": 1}'}, "workflow_name", "workflow_name or workflow_id"),
        ({"workflow_name": "greet", "colour": 1}, "colour", "not permitted"),
        ({"workflow_name": "greet", "description": "d" * 300}, "description", "at most"),
    ],
)
async def test_a_bad_start_is_refused_and_stores_nothing(
    api: Running, body: dict[str, Any], field: str, says: str
) -> None:
    await add(api, GREET)
    resp = await api.client.post("/v2/executions", json=body, headers=MEMBER)
    assert resp.status_code == 400, resp.text
    assert problem(resp)[0] == field and says in problem(resp)[1]
    listed = (await api.client.get("/v2/executions", headers=ADMIN)).json()
    assert listed["executions"] == []


async def test_an_unknown_workflow_is_404(api: Running) -> None:
    resp = await api.client.post(
        "/v2/executions", json={"workflow_name": "nowhere"}, headers=MEMBER
    )
    assert resp.status_code == 404 and problem(resp)[0] == "workflow_name"


async def test_another_project_sees_nothing_of_ours(api: Running) -> None:
    [wf] = await add(api, GREET)
    execution = await start(api, "greet", {"who": "a"})
    await eventually(lambda: _is(api, execution["id"], "SUCCESS"), what="the execution")
    [task] = [
        t
        for t in (await api.client.get("/v2/tasks", headers=MEMBER)).json()["tasks"]
        if t["name"] == "say"
    ]
    for path in (
        f"/v2/workflows/{wf['id']}",
        "/v2/workflows/greet",
        f"/v2/executions/{execution['id']}",
        f"/v2/executions/{execution['id']}/tasks",
        f"/v2/tasks/{task['id']}",
        f"/v2/tasks/{task['id']}/action_executions",
    ):
        resp = await api.client.get(path, headers=OTHER)
        assert resp.status_code == 404, path
    for path in ("/v2/executions", "/v2/tasks", "/v2/action_executions"):
        body = (await api.client.get(path, headers=OTHER)).json()
        assert next(iter(body.values())) == [], path
    stop = await api.client.put(
        f"/v2/executions/{execution['id']}", json={"state": "CANCELLED"}, headers=OTHER
    )
    assert stop.status_code == 404
    assert (await api.client.delete(f"/v2/workflows/{wf['id']}", headers=OTHER)).status_code == 404
    gone = await api.client.delete(f"/v2/executions/{execution['id']}", headers=OTHER)
    assert gone.status_code == 404
    # The admin role sees it all.
    assert (await api.client.get(f"/v2/executions/{execution['id']}", headers=ADMIN)).is_success
    # A public workflow is everyone's to read and start, its project's to delete.
    [public] = await add(api, GREET.replace("greet:", "hello:"), scope="public")
    other_run = await start(api, public["id"], {"who": "b"}, headers=OTHER)
    assert other_run["project_id"] == "project-b"
    refused = await api.client.delete(f"/v2/workflows/{public['id']}", headers=OTHER)
    assert refused.status_code == 403


async def test_a_builtin_workflow_is_never_deleted(api: Running) -> None:
    resp = await api.client.delete("/v2/workflows/opendoctor.vm_recovery", headers=ADMIN)
    assert resp.status_code == 409
    assert "built-in" in problem(resp)[1]
    assert (await api.client.get("/v2/workflows/opendoctor.vm_recovery", headers=ADMIN)).is_success


async def test_lists_page_with_a_marker_and_a_next_link(api: Running) -> None:
    for i in range(5):
        await add(api, GREET.replace("greet:", f"greet{i}:"))
    mine = {"X-Project-Id": "project-a", "X-Roles": "member"}
    first = (await api.client.get("/v2/workflows?limit=4", headers=mine)).json()
    assert len(first["workflows"]) == 4 and "marker=" in first["next"]
    second = (await api.client.get(first["next"], headers=mine)).json()
    seen = [w["name"] for w in first["workflows"] + second["workflows"]]
    assert len(seen) == len(set(seen)) and {f"greet{i}" for i in range(5)} <= set(seen)
    assert "next" not in second or len(second["workflows"]) == 4

    runs = [await start(api, "greet0", {"who": str(i)}) for i in range(3)]
    ids = [r["id"] for r in runs]
    oldest = (await api.client.get("/v2/executions?limit=2", headers=MEMBER)).json()
    assert [e["id"] for e in oldest["executions"]] == ids[:2]
    rest = (await api.client.get(oldest["next"], headers=MEMBER)).json()
    assert [e["id"] for e in rest["executions"]] == ids[2:]
    newest = await api.client.get(
        "/v2/executions",
        params={"limit": 2, "sort_keys": "created_at", "sort_dirs": "desc", "fields": "state"},
        headers=MEMBER,
    )
    assert [e["id"] for e in newest.json()["executions"]] == ids[::-1][:2]
    assert set(newest.json()["executions"][0]) == {"id", "state"}

    bad = await api.client.get("/v2/executions?marker=nope", headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "marker"
    bad = await api.client.get("/v2/executions?limit=1001", headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "limit"
    bad = await api.client.get("/v2/executions?sort_keys=name", headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "sort_keys"
    bad = await api.client.get("/v2/executions?state=SLEEPING", headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "state"
    long_id = await api.client.get("/v2/executions/" + "x" * 37, headers=MEMBER)
    assert long_id.status_code == 400 and problem(long_id)[0] == "id"


async def test_pause_resume_and_cancel_through_put(api: Running) -> None:
    await add(api, SLOW)
    execution = await start(api, "slow", {})
    path = f"/v2/executions/{execution['id']}"
    paused = await api.client.put(path, json={"state": "PAUSED"}, headers=MEMBER)
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "PAUSED"
    resumed = await api.client.put(path, json={"state": "RUNNING"}, headers=MEMBER)
    assert resumed.json()["state"] == "RUNNING"
    described = await api.client.put(path, json={"description": "renamed"}, headers=MEMBER)
    assert described.json()["description"] == "renamed"
    refused = await api.client.delete(path, headers=MEMBER)
    assert refused.status_code == 409  # still running: cancel first, or force
    bad = await api.client.put(path, json={"state": "SLEEPING"}, headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "state"
    cancelled = await api.client.put(
        path, json={"state": "CANCELLED", "state_info": "not needed"}, headers=MEMBER
    )
    assert cancelled.json()["state"] == "CANCELLED"
    assert cancelled.json()["state_info"] == "not needed"
    again = await api.client.put(path, json={"state": "RUNNING"}, headers=MEMBER)
    assert again.status_code == 409 and problem(again)[0] == "state"
    late = await api.client.put(path, json={"description": "after"}, headers=MEMBER)
    assert late.status_code == 200 and late.json()["description"] == "after"
    assert (await api.client.delete(path, headers=MEMBER)).status_code == 204
    assert (await api.client.get(path, headers=MEMBER)).status_code == 404


async def test_a_running_execution_is_deleted_with_force(api: Running) -> None:
    await add(api, SLOW)
    execution = await start(api, "slow", {})
    path = f"/v2/executions/{execution['id']}"
    resp = await api.client.delete(path, params={"force": "true"}, headers=MEMBER)
    assert resp.status_code == 204
    assert (await api.client.get(path, headers=MEMBER)).status_code == 404


async def test_actions_are_listed_from_the_registry(api: Running) -> None:
    body = (await api.client.get("/v2/actions", headers=MEMBER)).json()
    by_name = {a["name"]: a for a in body["actions"]}
    assert {"std.echo", "std.noop", "std.http", "vim.evacuate"} <= set(by_name)
    assert by_name["std.echo"]["is_system"] is True and "output" in by_name["std.echo"]["input"]
    for path in ("/v2/actions/std.echo", "/v2/actions/std.echo/"):
        shown = await api.client.get(path, headers=MEMBER)
        assert shown.status_code == 200 and shown.json()["id"] == by_name["std.echo"]["id"]
    assert (await api.client.get("/v2/actions/no.such", headers=MEMBER)).status_code == 404
    page = (await api.client.get("/v2/actions?limit=2", headers=MEMBER)).json()
    assert len(page["actions"]) == 2 and "next" in page


async def test_every_route_needs_an_identity(api: Running) -> None:
    resp = await api.client.get("/v2/workflows", headers={"X-Project-Id": ""})
    assert resp.status_code == 401
    resp = await api.client.post("/v2/workflows", content=GREET, headers=TEXT)
    assert resp.status_code == 401


async def test_the_openapi_document_declares_the_errors(api: Running) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    post = doc["paths"]["/v2/executions"]["post"]["responses"]
    assert {"201", "400", "404", "409", "429", "503"} <= set(post)
    put = doc["paths"]["/v2/workflows"]["put"]
    assert "text/plain" in put["requestBody"]["content"]


# One sub-workflow succeeds, the other fails, and so the top one.
HALF_FAILING = """\
version: '2.0'
top:
  tasks:
    fine:
      workflow: works
    broken:
      workflow: fails
works:
  tasks:
    nothing:
      action: std.noop
fails:
  tasks:
    boom:
      action: std.fail
"""


async def test_sub_executions_through_failed_tasks_only(api: Running) -> None:
    await add(api, HALF_FAILING)
    top = await start(api, "top", {})
    await eventually(lambda: _is(api, top["id"], "ERROR"), what="the execution failing")
    path = f"/v2/executions/{top['id']}/executions"

    every = (await api.client.get(path, headers=MEMBER)).json()["executions"]
    assert every[0]["id"] == top["id"]
    assert sorted(e["workflow_name"] for e in every[1:]) == ["fails", "works"]
    failed = await api.client.get(path, params={"errors_only": "True"}, headers=MEMBER)
    assert [e["workflow_name"] for e in failed.json()["executions"]] == ["top", "fails"]
    unset = await api.client.get(path, params={"errors_only": "", "max_depth": -1}, headers=MEMBER)
    assert len(unset.json()["executions"]) == 3

    bad = await api.client.get(path, params={"errors_only": "maybe"}, headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "errors_only"
    bad = await api.client.get(path, params={"max_depth": -2}, headers=MEMBER)
    assert bad.status_code == 400 and problem(bad)[0] == "max_depth"
    assert (await api.client.get(path, headers=OTHER)).status_code == 404


async def test_tasks_and_actions_show_their_workflows_namespace(api: Running) -> None:
    await add(api, GREET, namespace="team")
    body = {"workflow_name": "greet", "workflow_namespace": "team", "input": '{"who": "x"}'}
    resp = await api.client.post("/v2/executions", json=body, headers=MEMBER)
    assert resp.status_code == 201, resp.text
    execution_id = resp.json()["id"]
    await eventually(lambda: _is(api, execution_id, "SUCCESS"), what="the execution")

    tasks = (await api.client.get("/v2/tasks", headers=MEMBER)).json()["tasks"]
    assert len(tasks) == 2 and {t["workflow_namespace"] for t in tasks} == {"team"}
    one = (await api.client.get(f"/v2/tasks/{tasks[0]['id']}", headers=MEMBER)).json()
    assert one["workflow_namespace"] == "team"
    actions = (await api.client.get("/v2/action_executions", headers=MEMBER)).json()
    assert {a["workflow_namespace"] for a in actions["action_executions"]} == {"team"}
    shown = await api.client.get(
        f"/v2/action_executions/{actions['action_executions'][0]['id']}", headers=MEMBER
    )
    assert shown.json()["workflow_namespace"] == "team"
