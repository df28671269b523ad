"""Rule templates at run time: /v1/templates lists, checks, adds, replaces and deletes."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from opendoctor.api.templates import EXAMPLE_TEMPLATE
from opendoctor.core.workflows import FINISHED, Execution
from opendoctor.store.workflows import WorkflowStore
from opendoctor.workflow.service import TemplateWorkflows
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Running,
    host_down,
    lab_vim,
    serving,
    settings_for,
)

YAML = {**ADMIN, "content-type": "application/yaml"}
BUILT_INS = {
    "host_down",
    "host_unreachable",
    "instance_down",
    "port_down",
    "power_and_rack",
    "switch_down",
}

# Hosts the monitor reports down get a warning of their own, caused by the fault's alarm.
HOST_WATCH = EXAMPLE_TEMPLATE

# Line numbers matter: the problems name them.
BROKEN = """\
name: broken
description: Three mistakes.
entities:
  alarm: {category: ALARM}
  host: {type: host}
scenarios:
  - condition: alarm [on] hots
    actions:
      - set_state: {target: host, state: ERROR}
  - condition: NOT alarm [on] host
    actions:
      - set_state: {target: host, state: ERROR}
  - condition: alarm [on] host
    actions:
      - reboot: {target: host}
"""

# A critical alarm on a host raises another critical alarm on that host: it would keep
# itself raised.
ECHO = """\
name: echo
description: An alarm that causes itself.
entities:
  alarm: {category: ALARM, state: CRITICAL}
  host: {type: host}
scenarios:
  - condition: alarm [on] host
    actions:
      - raise_alarm: {target: host, name: host.echo, severity: CRITICAL, causing_alarm: alarm}
"""

# Alone it is fine; with host_down in force (a critical alarm on a host deduces
# instance.host_down on its servers) it closes a loop.
LOOP_WITH_HOST_DOWN = """\
name: loop
description: From a server's host_down alarm back to its host.
entities:
  server_alarm: {category: ALARM, name: instance.host_down}
  server: {type: server}
  host: {type: host}
scenarios:
  - condition: server_alarm [on] server AND host [contains] server
    actions:
      - raise_alarm:
          target: host
          name: host.from_servers
          severity: CRITICAL
          causing_alarm: server_alarm
"""


def problems(resp: httpx.Response) -> list[str]:
    errors = resp.json()["error"]["errors"]
    assert {e["field"] for e in errors} == {"template"}
    return [e["problem"] for e in errors]


async def graph_alarms(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    body = (await client.get("/v1/alarms", headers=ADMIN)).json()
    return {a["name"]: a for a in body["alarms"]}


async def watched(client: httpx.AsyncClient, host: str, name: str = "host.watched") -> bool:
    found = (await graph_alarms(client)).get(name)
    return found is not None and found["on"] == f"host:{host}"


async def test_the_built_ins_are_listed(running: Running) -> None:
    resp = await running.client.get("/v1/templates", headers=ADMIN)
    assert resp.status_code == 200
    listed = {t["name"]: t for t in resp.json()}
    assert set(listed) == BUILT_INS
    host_down_ = listed["host_down"]
    assert host_down_["origin"] == "built-in" and host_down_["source"] == "host_down.yaml"
    assert host_down_["scenarios"] == 2 and host_down_["matches"] == 0
    assert host_down_["description"].startswith("A host under a critical alarm")
    assert "text" not in host_down_

    one = await running.client.get("/v1/templates/host_down", headers=ADMIN)
    assert one.status_code == 200
    assert one.json()["text"].startswith("name: host_down\n")
    assert one.json()["scenarios"] == 2

    missing = await running.client.get("/v1/templates/nope", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["field"] == "name"
    not_admin = await running.client.get("/v1/templates", headers={"X-Project-Id": "p"})
    assert not_admin.status_code == 403


async def test_matches_count_what_each_template_holds(running: Running) -> None:
    await running.client.put("/events", json=[host_down("compute1")])
    await eventually(lambda: running.service.inspector.active.get(("host", "compute1")))

    async def host_down_matches() -> int:
        listed = (await running.client.get("/v1/templates", headers=ADMIN)).json()
        return int(next(t for t in listed if t["name"] == "host_down")["matches"])

    # At least the host itself (its servers are evacuated meanwhile).
    assert await eventually(host_down_matches, what="host_down matches")


async def test_a_good_template_is_valid_in_every_body_form(running: Running) -> None:
    for headers, kw in [
        (YAML, {"content": HOST_WATCH}),
        ({**ADMIN, "content-type": "text/plain"}, {"content": HOST_WATCH}),
        (ADMIN, {"json": {"text": HOST_WATCH}}),
    ]:
        resp = await running.client.post("/v1/templates/validate", headers=headers, **kw)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"valid": True, "name": "host_watch"}
    # Checking adds nothing.
    assert "host_watch" not in running.service.templates.installed


async def test_a_bad_template_lists_every_problem_with_its_line(running: Running) -> None:
    resp = await running.client.post("/v1/templates/validate", headers=YAML, content=BROKEN)
    assert resp.status_code == 422
    assert resp.json()["error"]["status"] == 422
    assert problems(resp) == [
        "line 7: condition names 'hots', which is not an entity (known: alarm, host)",
        "line 10: the alternative 'NOT alarm [on] host' is all negative: "
        "it needs something that holds to start from",
        "line 15: unknown action 'reboot' (expected one of raise_alarm, set_state, "
        "mark_down, add_causal_relationship, notify, run_workflow)",
    ]
    assert resp.json()["error"]["message"].startswith("invalid template: line 7: ")
    # The JSON form answers the same.
    as_json = await running.client.post(
        "/v1/templates/validate", headers=ADMIN, json={"text": BROKEN}
    )
    assert as_json.status_code == 422 and problems(as_json) == problems(resp)


async def test_a_cycle_of_causes_is_refused(running: Running) -> None:
    resp = await running.client.post("/v1/templates/validate", headers=YAML, content=ECHO)
    assert resp.status_code == 422
    assert problems(resp) == [
        "line 7: a cycle of causes: host.echo → host.echo (an alarm would keep itself raised)"
    ]
    # Cycles are checked against the templates in force: this one loops through host_down.
    resp = await running.client.post(
        "/v1/templates/validate", headers=YAML, content=LOOP_WITH_HOST_DOWN
    )
    assert resp.status_code == 422
    [problem] = problems(resp)
    assert "a cycle of causes: " in problem and problem.startswith("line ")
    assert "host.from_servers" in problem and "instance.host_down" in problem


async def test_bodies_that_are_not_a_template(running: Running) -> None:
    for path in ("/v1/templates/validate", "/v1/templates"):
        empty = await running.client.post(path, headers=YAML, content=b"")
        assert empty.status_code == 400
        assert empty.json()["error"]["errors"][0]["field"] == "body"
        blank = await running.client.post(path, headers=YAML, content=b"  \n")
        assert blank.status_code == 400
        no_text = await running.client.post(path, headers=ADMIN, json={"yaml": HOST_WATCH})
        assert no_text.status_code == 400
        assert no_text.json()["error"]["errors"][0]["field"] == "text"
        malformed = await running.client.post(
            path, headers={**ADMIN, "content-type": "application/json"}, content=b"{"
        )
        assert malformed.status_code == 400 and "malformed JSON" in malformed.text
        form = await running.client.post(path, headers=ADMIN, files={"t": HOST_WATCH})
        assert form.status_code == 415
        assert form.json()["error"]["errors"][0]["field"] == "content-type"
        not_yaml = await running.client.post(path, headers=YAML, content=b"name: [")
        assert not_yaml.status_code == 422 and problems(not_yaml)[0].startswith("line ")
    limit = running.service.settings.api.max_body_bytes
    huge = HOST_WATCH + "#" * (limit + 1)
    resp = await running.client.post("/v1/templates", headers=YAML, content=huge)
    assert resp.status_code == 413
    assert "host_watch" not in running.service.templates.installed
    not_admin = await running.client.post(
        "/v1/templates",
        headers={"X-Project-Id": "p", "content-type": "application/yaml"},
        content=HOST_WATCH,
    )
    assert not_admin.status_code == 403


# A few hundred bytes that a YAML loader expands into a billion strings; a node that
# holds itself; nesting no template needs.
ALIAS_BOMB = "name: bomb\n" + "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9)
)
SELF_HOLDING = "name: loop\nentities: &e [*e]\n"
DEEP = "name: deep\nentities: " + "[" * 10_000 + "]" * 10_000 + "\n"


async def test_yaml_that_expands_or_nests_without_end_is_refused_at_once(
    running: Running,
) -> None:
    for text, problem in (
        (ALIAS_BOMB, "anchors and aliases"),
        (SELF_HOLDING, "anchors and aliases"),
        (DEEP, "nested deeper than 64 levels"),
    ):
        for path in ("/v1/templates/validate", "/v1/templates"):
            started = time.monotonic()
            resp = await running.client.post(path, headers=YAML, content=text)
            assert resp.status_code == 422, resp.text
            (found,) = problems(resp)
            assert found.startswith("line ") and problem in found
            assert time.monotonic() - started < 2.0
    # Nothing of it is in force, and the service still serves.
    assert set(running.service.templates.installed) == set(BUILT_INS)
    assert (await running.client.get("/health")).json()["status"] == "ok"


async def test_an_added_template_acts_on_new_faults(running: Running) -> None:
    resp = await running.client.post("/v1/templates", headers=YAML, content=HOST_WATCH)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/templates/host_watch"
    body = resp.json()
    assert body["name"] == "host_watch" and body["origin"] == "api" and body["created"]
    assert body["effects"] == {"notifications": 0, "mark_downs": 0, "workflows": 0}
    listed = {
        t["name"]: t for t in (await running.client.get("/v1/templates", headers=ADMIN)).json()
    }
    assert listed["host_watch"]["origin"] == "api"

    await running.client.put("/events", json=[host_down("compute1")])
    await eventually(lambda: watched(running.client, "compute1"), what="host.watched raised")
    alarm = (await graph_alarms(running.client))["host.watched"]
    fault = running.service.inspector.active[("host", "compute1")]
    assert alarm["deduced"] and alarm["template"] == "host_watch"
    assert alarm["caused_by"] == f"alarm:{fault.id}"
    assert alarm["state"] == "WARNING"
    one = (await running.client.get("/v1/templates/host_watch", headers=ADMIN)).json()
    assert one["matches"] == 1 and one["text"] == HOST_WATCH

    # The fault clears: so does what the template deduced from it.
    await running.client.put("/events", json=[host_down("compute1", status="up")])
    await eventually(lambda: _gone(running.client, "host.watched"), what="host.watched cleared")


async def _gone(client: httpx.AsyncClient, name: str) -> bool:
    return name not in await graph_alarms(client)


PAGE_ONCALL = """
version: '2.0'
page-oncall:
  input: [host, servers, template]
  output:
    paged: <% $.host %>
  tasks:
    page:
      action: std.echo output=<% $.servers %>
"""


async def test_an_added_template_acts_on_current_faults(running: Running) -> None:
    workflows = running.service.workflow_part.workflows
    assert workflows is not None
    await workflows.add(PAGE_ONCALL, "admin")
    await running.client.put("/events", json=[host_down("compute1")])
    fault = await eventually(lambda: running.service.inspector.active.get(("host", "compute1")))
    await running.service.inspector.done[fault.id].wait()
    page = HOST_WATCH.replace("name: host_watch", "name: page_oncall").replace(
        "      - raise_alarm: {target: host, name: host.watched, severity: WARNING, "
        "causing_alarm: alarm}",
        "      - run_workflow: {workflow: page-oncall, target: host}",
    )
    resp = await running.client.post("/v1/templates", headers=YAML, content=page)
    assert resp.status_code == 201, resp.text
    assert resp.json()["effects"] == {"notifications": 0, "mark_downs": 0, "workflows": 1}
    assert resp.json()["matches"] == 1
    runner = running.service.inspector.effects.workflows
    assert isinstance(runner, TemplateWorkflows)
    [execution_id] = await eventually(lambda: runner.started, what="the workflow started")
    done = await eventually(
        lambda: _ended(workflows.store, execution_id), what="the execution to end"
    )
    assert (done.state, done.output) == ("SUCCESS", {"paged": "compute1"})
    assert done.input["template"] == "page_oncall"
    servers = {s.id for s in running.service.topology.servers_on("compute1")}
    assert set(done.input["servers"]) == servers


async def _ended(store: WorkflowStore, execution_id: str) -> Execution | None:
    found = await store.execution(execution_id)
    return found if found is not None and found.state in FINISHED else None


async def test_replacing_a_template(running: Running) -> None:
    await running.client.put("/events", json=[host_down("compute1")])
    first = await running.client.post("/v1/templates", headers=YAML, content=HOST_WATCH)
    assert first.status_code == 201
    await eventually(lambda: watched(running.client, "compute1"), what="host.watched raised")

    v2 = HOST_WATCH.replace("host.watched", "host.watched_v2")
    resp = await running.client.post("/v1/templates", headers=ADMIN, json={"text": v2})
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] is False and resp.json()["origin"] == "api"
    assert "location" not in resp.headers
    one = (await running.client.get("/v1/templates/host_watch", headers=ADMIN)).json()
    assert one["text"] == v2
    # The old version's deduction went with it; the new one's is there.
    found = await graph_alarms(running.client)
    assert "host.watched" not in found
    assert found["host.watched_v2"]["on"] == "host:compute1"


async def test_an_invalid_replacement_leaves_the_previous_version_in_force(
    running: Running,
) -> None:
    await running.client.post("/v1/templates", headers=YAML, content=HOST_WATCH)
    await running.client.put("/events", json=[host_down("compute1")])
    await eventually(lambda: watched(running.client, "compute1"), what="host.watched raised")

    bad = HOST_WATCH.replace("alarm [on] host", "alarm [on] hots")
    resp = await running.client.post("/v1/templates", headers=YAML, content=bad)
    assert resp.status_code == 422
    assert problems(resp) == [
        "line 7: condition names 'hots', which is not an entity (known: alarm, host)"
    ]
    one = (await running.client.get("/v1/templates/host_watch", headers=ADMIN)).json()
    assert one["text"] == HOST_WATCH
    # What it deduced stays, and it still acts on new faults.
    assert await watched(running.client, "compute1")
    await running.client.put("/events", json=[host_down("compute2")])

    async def both() -> bool:
        body = (await running.client.get("/v1/alarms", headers=ADMIN)).json()
        on = {a["on"] for a in body["alarms"] if a["name"] == "host.watched"}
        return on == {"host:compute1", "host:compute2"}

    await eventually(both, what="host.watched on both hosts")


async def test_deleting_a_template(running: Running) -> None:
    await running.client.post("/v1/templates", headers=YAML, content=HOST_WATCH)
    await running.client.put("/events", json=[host_down("compute1")])
    await eventually(lambda: watched(running.client, "compute1"), what="host.watched raised")

    resp = await running.client.delete("/v1/templates/host_watch", headers=ADMIN)
    assert resp.status_code == 204 and resp.content == b""
    assert (await running.client.get("/v1/templates/host_watch", headers=ADMIN)).status_code == 404
    assert await _gone(running.client, "host.watched")
    again = await running.client.delete("/v1/templates/host_watch", headers=ADMIN)
    assert again.status_code == 404
    assert again.json()["error"]["errors"][0]["field"] == "name"


async def test_built_ins_cannot_be_deleted_but_can_be_replaced(running: Running) -> None:
    resp = await running.client.delete("/v1/templates/host_down", headers=ADMIN)
    assert resp.status_code == 409
    message = resp.json()["error"]["message"]
    assert "built-in" in message and "OPENDOCTOR_INSPECTOR__DEFAULT_TEMPLATES=false" in message
    assert running.service.templates.installed["host_down"].origin == "built-in"

    builtin = (await running.client.get("/v1/templates/instance_down", headers=ADMIN)).json()
    quieter = builtin["text"].replace("      - notify: {target: server}\n", "")
    assert quieter != builtin["text"]
    resp = await running.client.post("/v1/templates", headers=YAML, content=quieter)
    assert resp.status_code == 200 and resp.json()["origin"] == "api"
    # Deleting the replacement brings the built-in back.
    assert (
        await running.client.delete("/v1/templates/instance_down", headers=ADMIN)
    ).status_code == 204
    back = (await running.client.get("/v1/templates/instance_down", headers=ADMIN)).json()
    assert back["origin"] == "built-in" and back["text"] == builtin["text"]


def restartable(tmp_path: Path, db_url: str) -> AbstractAsyncContextManager[Running]:
    """A service on the database at `db_url`: start it again to see what it kept."""
    return serving(settings_for(tmp_path, database_url=db_url), lab_vim())


async def test_added_templates_outlive_a_restart(tmp_path: Path, db_url: str) -> None:
    quieter_down = None
    async with restartable(tmp_path, db_url) as r:
        client = r.client
        assert (await client.post("/v1/templates", headers=YAML, content=HOST_WATCH)).is_success
        builtin = (await client.get("/v1/templates/instance_down", headers=ADMIN)).json()
        quieter_down = builtin["text"].replace("      - notify: {target: server}\n", "")
        assert (await client.post("/v1/templates", headers=YAML, content=quieter_down)).is_success
        echo = await client.post("/v1/templates", headers=YAML, content=ECHO)
        assert echo.status_code == 422

    async with restartable(tmp_path, db_url) as r:
        service, client = r.service, r.client
        listed = {t["name"]: t for t in (await client.get("/v1/templates", headers=ADMIN)).json()}
        assert set(listed) == BUILT_INS | {"host_watch"}
        assert listed["host_watch"]["origin"] == "api"
        assert listed["instance_down"]["origin"] == "api"
        assert service.templates.installed["instance_down"].template.text == quieter_down
        # And it acts.
        await client.put("/events", json=[host_down("compute2")])
        await eventually(lambda: watched(client, "compute2"), what="host.watched after restart")
        # Deleted, it stays deleted.
        assert (await client.delete("/v1/templates/host_watch", headers=ADMIN)).status_code == 204

    async with restartable(tmp_path, db_url) as r:
        service = r.service
        assert "host_watch" not in service.templates.installed


async def test_a_template_that_takes_too_long_to_check_is_refused(
    tmp_path: Path, db_url: str
) -> None:
    # 300 scenarios take the checker a good part of a second on this machine (checking
    # grows faster than the text): far over a 20 ms budget, and well under the body limit.
    scenarios = "".join(
        "  - condition: alarm [on] host\n    actions:\n      - raise_alarm: "
        f"{{target: host, name: host.watched{i}, severity: WARNING, causing_alarm: alarm}}\n"
        for i in range(300)
    )
    many = HOST_WATCH.split("scenarios:\n")[0].replace("host_watch", "many") + (
        "scenarios:\n" + scenarios
    )
    settings = settings_for(
        tmp_path, database_url=db_url, inspector={"template_check_seconds": 0.02}
    )
    async with serving(settings, lab_vim()) as r:
        for path in ("/v1/templates/validate", "/v1/templates"):
            resp = await r.client.post(path, headers=YAML, content=many)
            assert resp.status_code == 422, resp.text
            problem = resp.json()["error"]["errors"][0]["problem"]
            assert "took longer than 0.02 s" in problem
        assert "many" not in r.service.templates.installed
        assert (await r.client.get("/v1/templates/many", headers=ADMIN)).status_code == 404
        # With time to finish, the same template is valid: it was refused for time alone.
        r.service.templates.check_seconds = 10.0
        resp = await r.client.post("/v1/templates/validate", headers=YAML, content=many)
        assert resp.json() == {"valid": True, "name": "many"}
