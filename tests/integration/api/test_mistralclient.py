"""The real python-mistralclient against the Mistral-compatible API on a real port.

The client is built as its own `mistral` command builds it without Keystone: no auth
URL, the endpoint given (`mistral_url`), and the caller's project and user, which it
sends as X-Project-Id / X-User-Id on a plain requests session; opendoctor believes them
from loopback (api.auth_mode `trusted-headers`). In token mode the client's
`auth_token` goes out as X-Auth-Token, as a token from Keystone would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mistralclient.api import base
from mistralclient.api import client as mistral
from mistralclient.commands.v2 import action_executions as action_execution_cmd
from mistralclient.commands.v2 import actions as action_cmd
from mistralclient.commands.v2 import executions as execution_cmd
from mistralclient.commands.v2 import tasks as task_cmd
from mistralclient.commands.v2 import workflows as workflow_cmd

from tests.conftest import eventually
from tests.live import live_api
from tests.workflow_texts import GREET, NESTED, SLOW

# Without the shipped workflows, so that a project's list is what the test added
# (tests/unit/api/test_mistral.py covers them).
NO_BUILTIN = {"builtin": False}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path, workflow=NO_BUILTIN) as url:
        yield url


def client(url: str, project: str = "project-a", **auth: Any) -> Any:
    return mistral.client(mistral_url=url + "/v2", project_id=project, user_id="vnfm-a", **auth)


async def test_mistralclient_drives_workflows_executions_tasks_and_actions(live: str) -> None:
    m = client(live)
    assert m.workflows.validate(GREET) == {"valid": True}
    checked = m.workflows.validate(GREET.replace("std.noop", "std.nope"))
    assert checked["valid"] is False and checked["error"].startswith("line ")

    [wf] = m.workflows.create(GREET)
    assert wf.name == "greet" and wf.scope == "private" and wf.project_id == "project-a"
    assert wf.input == 'who, greeting="hello"'
    assert [w.name for w in m.workflows.list()] == ["greet"]
    assert m.workflows.get("greet").id == wf.id
    assert m.workflows.get(wf.id).definition == GREET
    [updated] = m.workflows.update(GREET.replace("greeting: hello", "greeting: hi"))
    assert updated.id == wf.id and updated.input == 'who, greeting="hi"'
    with pytest.raises(base.APIException) as raised:
        m.workflows.create(GREET)
    assert raised.value.error_code == 409 and "greet" in raised.value.error_message

    execution = m.executions.create("greet", workflow_input={"who": "world"}, description="one")
    assert execution.workflow_name == "greet" and execution.description == "one"
    assert json.loads(execution.input) == {"who": "world"}
    await eventually(lambda: m.executions.get(execution.id).state == "SUCCESS", what="SUCCESS")
    done = m.executions.get(execution.id)
    assert json.loads(done.output) == {"said": "hi, world"}
    assert execution.id in [e.id for e in m.executions.list()]

    tasks = {t.name: t for t in m.tasks.list(workflow_execution_id=execution.id)}
    assert {n: t.state for n, t in tasks.items()} == {"say": "SUCCESS", "rest": "SUCCESS"}
    assert json.loads(tasks["say"].result) == "hi, world"
    assert json.loads(tasks["say"].published) == {"said": "hi, world"}
    assert m.tasks.get(tasks["say"].id).workflow_execution_id == execution.id
    [action] = m.action_executions.list(task_execution_id=tasks["say"].id)
    assert action.name == "std.echo" and action.state == "SUCCESS"
    assert json.loads(action.output) == {"result": "hi, world"}
    assert m.action_executions.get(action.id).task_name == "say"
    assert "std.echo" in [a.name for a in m.actions.list()]
    assert m.actions.get("std.echo").is_system is True

    with pytest.raises(base.APIException) as raised:
        m.executions.create("greet", workflow_input={"nobody": 1})
    assert raised.value.error_code == 400 and "input" in raised.value.error_message

    m.executions.delete(execution.id)
    with pytest.raises(base.APIException) as raised:
        m.executions.get(execution.id)
    assert raised.value.error_code == 404
    m.workflows.delete("greet")
    assert m.workflows.list() == []


async def test_mistralclient_pauses_resumes_and_cancels(live: str) -> None:
    m = client(live)
    m.workflows.create(SLOW)
    execution = m.executions.create("slow")
    assert m.executions.update(execution.id, "PAUSED").state == "PAUSED"
    assert m.executions.get(execution.id).state == "PAUSED"
    assert m.executions.update(execution.id, "RUNNING").state == "RUNNING"
    assert m.executions.update(execution.id, None, description="still napping").description == (
        "still napping"
    )
    with pytest.raises(base.APIException) as raised:
        m.executions.delete(execution.id)
    assert raised.value.error_code == 409
    assert m.executions.update(execution.id, "CANCELLED").state == "CANCELLED"
    [nap] = m.tasks.list(workflow_execution_id=execution.id)
    assert nap.state == "CANCELLED"
    m.executions.delete(execution.id)

    # Another project sees none of it.
    other = client(live, project="project-b")
    assert other.executions.list() == [] and other.workflows.list() == []
    with pytest.raises(base.APIException) as raised:
        other.workflows.get("slow")
    assert raised.value.error_code == 404


def test_mistralclient_with_a_token(tmp_path: Path) -> None:
    tokens = {"tok-a": {"project_id": "project-a", "user_id": "u", "roles": ["member"]}}
    with live_api(
        tmp_path, api={"auth_mode": "token", "tokens": tokens}, workflow=NO_BUILTIN
    ) as url:
        m = mistral.client(mistral_url=url + "/v2", auth_token="tok-a")
        [wf] = m.workflows.create(SLOW)
        assert wf.project_id == "project-a"
        with pytest.raises(base.APIException) as raised:
            mistral.client(mistral_url=url + "/v2", auth_token="wrong").workflows.list()
        assert raised.value.error_code == 401


class Mistral:
    """`mistral_cli(Command, *argv)`: one command of the `mistral` shell, parsed and run
    as the shell runs it; a ShowOne's answer as a dict, a Lister's as dicts."""

    def __init__(self, m: Any) -> None:
        self.app = SimpleNamespace(client_manager=SimpleNamespace(workflow_engine=m))

    def __call__(self, command: type[Any], *argv: str) -> Any:
        cmd = command(self.app, None)
        columns, values = cmd.take_action(cmd.get_parser("mistral").parse_args(list(argv)))
        if isinstance(values, tuple):
            return dict(zip(columns, values, strict=True))
        return [dict(zip(columns, row, strict=True)) for row in values]


async def test_the_mistral_commands_list_and_show(live: str, tmp_path: Path) -> None:
    m = client(live)
    cli = Mistral(m)
    (tmp_path / "greet.yaml").write_text(GREET)
    [wf] = cli(workflow_cmd.Create, str(tmp_path / "greet.yaml"))
    assert wf["Name"] == "greet"
    assert [w["Name"] for w in cli(workflow_cmd.List)] == ["greet"]
    runs = [m.executions.create("greet", workflow_input={"who": str(i)}) for i in range(3)]
    for run in runs:
        await eventually(lambda r=run: m.executions.get(r.id).state == "SUCCESS", what="SUCCESS")
    # Newest first from the API, shown oldest first, as Mistral's own CLI does.
    listed = cli(execution_cmd.List, "--limit", "2")
    assert [e["ID"] for e in listed] == [r.id for r in runs[1:]]
    assert all(e["State"] == "SUCCESS" for e in listed)
    assert cli(execution_cmd.Get, runs[0].id)["Workflow name"] == "greet"
    tasks = cli(task_cmd.List, runs[0].id)
    assert sorted(t["Name"] for t in tasks) == ["rest", "say"]
    say = next(t for t in tasks if t["Name"] == "say")
    [action] = cli(action_execution_cmd.List, say["ID"])
    assert action["Name"] == "std.echo" and action["Task name"] == "say"
    assert any(a["Name"] == "std.noop" for a in cli(action_cmd.List))


async def test_mistralclient_lists_an_executions_sub_executions(live: str) -> None:
    m = client(live)
    m.workflows.create(NESTED)
    top = m.executions.create("family")
    await eventually(lambda: m.executions.get(top.id).state == "SUCCESS", what="SUCCESS")

    tree = m.executions.get_ex_sub_executions(top.id)
    assert [e.workflow_name for e in tree] == ["family", "parent", "child", "parent", "child"]
    assert all(e.root_execution_id == top.id for e in tree[1:])
    # Depth first: each child right after the parent whose task started it.
    for parent, child in ((tree[1], tree[2]), (tree[3], tree[4])):
        assert m.tasks.get(child.task_execution_id).workflow_execution_id == parent.id
    one_level = m.executions.get_ex_sub_executions(top.id, max_depth=1)
    assert [e.id for e in one_level] == [top.id, tree[1].id, tree[3].id]
    assert [e.id for e in m.executions.get_ex_sub_executions(top.id, max_depth=0)] == [top.id]
    # Nothing failed: only the execution itself.
    assert [e.id for e in m.executions.get_ex_sub_executions(top.id, errors_only=True)] == [top.id]
    below = m.executions.get_ex_sub_executions(tree[1].id)
    assert [e.id for e in below] == [tree[1].id, tree[2].id]

    rows = Mistral(m)(execution_cmd.SubExecutionsLister, top.id, "--max-depth", "1")
    assert [r["ID"] for r in rows] == [e.id for e in one_level]
    with pytest.raises(base.APIException) as raised:
        client(live, project="project-b").executions.get_ex_sub_executions(top.id)
    assert raised.value.error_code == 404
