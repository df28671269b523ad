"""`opendoctor workflow run | executions | execution | pause | resume | cancel | tasks |
actions`: workflows started on a running service, followed to their end, and what each
of their tasks and action calls did (`/v2/executions`, `/v2/tasks`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_get
from opendoctor.cli.workflow_shared import (
    DEFAULT_API,
    FINISHED,
    NAME,
    NAMESPACE,
    cut,
    err,
    make_table,
    print_json,
    print_out,
    send_json,
    state_markup,
)

EXECUTION_ID = Annotated[str, typer.Argument(help="the execution's id")]


def _input(given: str | None, pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if given is not None:
        try:
            values = json.loads(given)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
        if not isinstance(values, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--input")
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: give key=value", param_hint="-i")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw  # a bare word is a string
    return values


def run(
    name: NAME,
    input_json: Annotated[
        str | None, typer.Option("--input", help='the input as a JSON object: {"host": "c1"}')
    ] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--value", "-i", help="one input value, key=value (the value JSON or a plain string)"
        ),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option(help='params as a JSON object: {"env": {...}}, {"task_name": ...}'),
    ] = None,
    description: Annotated[str, typer.Option(help="a note kept with the execution")] = "",
    namespace: NAMESPACE = "",
    wait: Annotated[
        bool, typer.Option("--wait", help="follow it to its end, then print its tasks")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="--wait: give up after this")] = 600.0,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Start a workflow; print the execution's id (with --wait: its end and its tasks).

    With --wait the exit status is 0 if it succeeded, 1 if it failed or was cancelled,
    2 if it did not end within --timeout (it goes on running).
    """
    body: dict[str, Any] = {
        "workflow_name": name,
        "workflow_namespace": namespace,
        "input": _input(input_json, pairs or []),
        "description": description,
    }
    if params is not None:
        body["params"] = params
    execution = send_json("POST", api, "/v2/executions", token, body)
    if not wait:
        print_json(execution) if as_json else print(execution["id"])
        return
    execution = _follow(api, token, execution, timeout)
    _show_execution(execution, _tasks_of(api, token, execution["id"]), as_json)
    if execution["state"] not in FINISHED:
        raise typer.Exit(2)
    if execution["state"] != "SUCCESS":
        raise typer.Exit(1)


def _follow(api: str, token: str | None, execution: dict[str, Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    path = f"/v2/executions/{execution['id']}"
    with err.status(f"{execution['workflow_name']} {execution['id']}: running") as status:
        while execution["state"] not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.2)
            execution = api_get(api, path, token)
            status.update(f"{execution['workflow_name']} {execution['id']}: {execution['state']}")
    return execution


def _tasks_of(api: str, token: str | None, execution_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    path = f"/v2/executions/{quote(execution_id, safe='')}/tasks?limit=1000"
    while path:
        body = api_get(api, path, token)
        tasks.extend(body["tasks"])
        following = body.get("next")
        path = following[following.index("/v2/") :] if following else ""
    return tasks


def _task_table(tasks: list[dict[str, Any]], title: str) -> Table:
    rows = [
        (
            t["id"],
            escape(t["name"]),
            state_markup(t["state"]),
            t["started_at"] or "",
            t["finished_at"] or "",
            cut(t["state_info"] if t["state"] == "ERROR" else t["result"]),
        )
        for t in tasks
    ]
    columns = ("id", "task", "state", "started", "finished", "result / problem")
    return make_table(title, columns, rows)


def _show_execution(body: dict[str, Any], tasks: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({**body, "tasks": tasks})
        return
    console = Console(width=max(Console().width, 160))
    console.print(f"[bold]{escape(body['workflow_name'])}[/bold] {body['id']}")
    console.print(f"state: {state_markup(body['state'])} {escape(body['state_info'] or '')}")
    for key in ("description", "created_at", "updated_at", "input", "output"):
        console.print(f"{key}: {escape(str(body[key] or ''))}", soft_wrap=True)
    console.print(_task_table(tasks, "tasks"))


def executions(
    workflow: Annotated[str | None, typer.Option(help="only those of this workflow")] = None,
    state: Annotated[
        str | None, typer.Option(help="only those in this state: RUNNING, SUCCESS, ERROR, ...")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 50,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List executions, newest first."""
    query: dict[str, Any] = {"limit": limit, "sort_keys": "created_at", "sort_dirs": "desc"}
    if workflow:
        query["workflow_name"] = workflow
    if state:
        query["state"] = state.upper()
    found = api_get(api, "/v2/executions?" + urlencode(query), token)["executions"]
    rows = [
        (
            e["id"],
            escape(e["workflow_name"]),
            state_markup(e["state"]),
            e["created_at"] or "",
            e["updated_at"] or "",
            escape(e["description"]),
        )
        for e in found
    ]
    columns = ("id", "workflow", "state", "created", "updated", "description")
    print_out(found, as_json, lambda: make_table("executions (newest first)", columns, rows))


def execution(
    execution_id: EXECUTION_ID,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Show an execution: its state, input, output and tasks."""
    body = api_get(api, f"/v2/executions/{quote(execution_id, safe='')}", token)
    _show_execution(body, _tasks_of(api, token, execution_id), as_json)


def _set_state(execution_id: str, state: str, api: str, token: str | None) -> None:
    path = f"/v2/executions/{quote(execution_id, safe='')}"
    changed = send_json("PUT", api, path, token, {"state": state})
    print(f"{execution_id}: {changed['state']}")


def _state_command(state: str, doc: str) -> Callable[..., None]:
    def command(execution_id: EXECUTION_ID, api: API = DEFAULT_API, token: TOKEN = None) -> None:
        _set_state(execution_id, state, api, token)

    command.__doc__ = doc
    return command


pause = _state_command("PAUSED", "Pause an execution: running tasks finish, no new task starts.")
resume = _state_command("RUNNING", "Resume a paused execution where it stopped.")
cancel = _state_command("CANCELLED", "Cancel an execution: its running tasks are cancelled.")


def tasks(
    execution_id: EXECUTION_ID,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List an execution's tasks: state, when, and what each returned or why it failed."""
    found = _tasks_of(api, token, execution_id)
    print_out(found, as_json, lambda: _task_table(found, f"tasks of {execution_id}"))


def actions(
    task_id: Annotated[str, typer.Argument(help="the task execution's id (see `tasks`)")],
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List a task's action executions, with their input and output.

    One per call of its action: per attempt of a retried task, per item of a with-items one.
    """
    body = api_get(api, f"/v2/tasks/{quote(task_id, safe='')}/action_executions?limit=1000", token)
    found = body["action_executions"]
    rows = [
        (
            a["id"],
            escape(a["name"]),
            state_markup(a["state"]),
            cut(a["input"]),
            cut(a["output"] if a["state"] != "ERROR" else a["state_info"] or a["output"]),
            a["updated_at"] or a["created_at"] or "",
        )
        for a in found
    ]
    columns = ("id", "action", "state", "input", "output", "updated")
    print_out(found, as_json, lambda: make_table(f"action executions of {task_id}", columns, rows))
