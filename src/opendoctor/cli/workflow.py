"""`opendoctor workflow ...`: recovery workflows (Mistral's v2 language) on a running
service, through its Mistral-compatible API (`/v2/workflows`, `/v2/executions`, ...)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_failed, api_get, api_request

app = typer.Typer(
    help="Recovery workflows: Mistral v2 workflow files, their executions and tasks.\n\n"
    "Check a file here, add it to a running service, start it and follow it to the end, "
    "look at what each task did. The same API serves python-mistralclient and the "
    "`mistral` command (point them at <api>/v2).",
    short_help="Workflows: check, add, run, follow executions and tasks.",
    no_args_is_help=True,
)

err = Console(stderr=True)
DEFAULT_API = "http://127.0.0.1:8780"
FINISHED = ("SUCCESS", "ERROR", "CANCELLED")
COLOURS = {"SUCCESS": "green", "ERROR": "red", "CANCELLED": "yellow", "PAUSED": "yellow"}

WORKFLOW_FILE = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, readable=True, help="a workflow file (YAML, version '2.0')"
    ),
]
NAME = Annotated[str, typer.Argument(help="the workflow's name or id")]
EXECUTION_ID = Annotated[str, typer.Argument(help="the execution's id")]
NAMESPACE = Annotated[str, typer.Option(help="the workflows' namespace (default: none)")]
PUBLIC = Annotated[bool, typer.Option("--public", help="every project may read and start them")]


def _print_json(body: Any) -> None:
    json.dump(body, sys.stdout, indent=2)
    print()


def _out(body: Any, as_json: bool, table: Callable[[], Table]) -> None:
    if as_json:
        _print_json(body)
    else:
        # Ids are printed whole: a cut id cannot be pasted into the next command.
        Console(width=max(Console().width, 160)).print(table())


def _table(title: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col == "id")
    for row in rows:
        table.add_row(*row)
    return table


def _state(state: str | None) -> str:
    state = state or ""
    colour = COLOURS.get(state)
    return f"[{colour}]{escape(state)}[/{colour}]" if colour else escape(state)


def _text_of(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc


def _send_definition(
    method: str, file: Path, public: bool, namespace: str, api: str, token: str | None
) -> Any:
    query = urlencode({"scope": "public" if public else "private", "namespace": namespace})
    resp = api_request(
        method, api, f"/v2/workflows?{query}", token, _text_of(file), content_type="text/plain"
    )
    if not resp.ok:
        raise api_failed(resp)
    return resp.json()["workflows"]


def _workflow_table(workflows: list[dict[str, Any]], title: str) -> Table:
    rows = [
        (
            w["id"],
            escape(w["name"]),
            escape(w["namespace"]),
            "built-in" if w.get("is_system") else w["scope"],
            escape(w["input"]),
            w["updated_at"] or w["created_at"] or "",
        )
        for w in workflows
    ]
    return _table(title, ("id", "name", "namespace", "scope", "input", "updated"), rows)


@app.command()
def validate(
    file: WORKFLOW_FILE,
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"valid": ..., "workflows": [...], "error": ...}')
    ] = False,
) -> None:
    """Check a workflow file here, without a running service.

    The actions it calls are checked against the built-in ones. Prints the problem
    with its line ("line N: path: problem") and exits 1, or prints the workflows it
    defines and exits 0.
    """
    from opendoctor.controller.memory import MemoryVim
    from opendoctor.workflow.actions import Toolbox, builtin_actions
    from opendoctor.workflow.spec import SpecError, parse

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    try:
        specs = parse(text, known_action=registry.__contains__)
    except SpecError as exc:
        if as_json:
            _print_json({"valid": False, "workflows": [], "error": str(exc)})
        else:
            err.print(
                f"[red]{escape(str(file))} is not a valid workflow file:[/red]", soft_wrap=True
            )
            err.print(f"  {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json({"valid": True, "workflows": list(specs), "error": None})
        return
    for name, spec in specs.items():
        print(f"valid: {name} ({len(spec.tasks)} task{'s' if len(spec.tasks) != 1 else ''})")


@app.command()
def add(
    file: WORKFLOW_FILE,
    public: PUBLIC = False,
    namespace: NAMESPACE = "",
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Add the workflows of a file to a running service.

    All or none: a file that does not validate (the problem is printed with its line)
    or a name already taken changes nothing, and the exit status is 1.
    """
    added = _send_definition("POST", file, public, namespace, api, token)
    _out(added, as_json, lambda: _workflow_table(added, "added"))


@app.command()
def update(
    file: WORKFLOW_FILE,
    public: PUBLIC = False,
    namespace: NAMESPACE = "",
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Replace the definitions of workflows added before, found by their names.

    Executions under way go on with the definition they started with.
    """
    updated = _send_definition("PUT", file, public, namespace, api, token)
    _out(updated, as_json, lambda: _workflow_table(updated, "updated"))


@app.command("list")
def list_workflows(api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False) -> None:
    """List the workflows: added ones, public ones and the built-in ones."""
    found = api_get(api, "/v2/workflows?limit=1000", token)["workflows"]
    _out(found, as_json, lambda: _workflow_table(found, "workflows"))


@app.command()
def show(
    name: NAME,
    namespace: NAMESPACE = "",
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Print a workflow's definition (with --json: its details too)."""
    query = urlencode({"namespace": namespace})
    body = api_get(api, f"/v2/workflows/{quote(name, safe='')}?{query}", token)
    if as_json:
        _print_json(body)
        return
    text: str = body["definition"]
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def delete(
    name: NAME, namespace: NAMESPACE = "", api: API = DEFAULT_API, token: TOKEN = None
) -> None:
    """Delete a workflow; its executions stay.

    Built-in ones are never deleted: add one of the same name to replace it.
    """
    query = urlencode({"namespace": namespace})
    resp = api_request("DELETE", api, f"/v2/workflows/{quote(name, safe='')}?{query}", token)
    if not resp.ok:
        raise api_failed(resp)
    print(f"deleted {name}")


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


@app.command()
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
    execution = _send_json("POST", api, "/v2/executions", token, body)
    if not wait:
        _print_json(execution) if as_json else print(execution["id"])
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


def _cut(text: str | None) -> str:
    text = text or ""
    return escape(text if len(text) <= 80 else text[:79] + "…")


def _task_table(tasks: list[dict[str, Any]], title: str) -> Table:
    rows = [
        (
            t["id"],
            escape(t["name"]),
            _state(t["state"]),
            t["started_at"] or "",
            t["finished_at"] or "",
            _cut(t["state_info"] if t["state"] == "ERROR" else t["result"]),
        )
        for t in tasks
    ]
    columns = ("id", "task", "state", "started", "finished", "result / problem")
    return _table(title, columns, rows)


def _show_execution(body: dict[str, Any], tasks: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json({**body, "tasks": tasks})
        return
    console = Console(width=max(Console().width, 160))
    console.print(f"[bold]{escape(body['workflow_name'])}[/bold] {body['id']}")
    console.print(f"state: {_state(body['state'])} {escape(body['state_info'] or '')}")
    for key in ("description", "created_at", "updated_at", "input", "output"):
        console.print(f"{key}: {escape(str(body[key] or ''))}", soft_wrap=True)
    console.print(_task_table(tasks, "tasks"))


@app.command()
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
            _state(e["state"]),
            e["created_at"] or "",
            e["updated_at"] or "",
            escape(e["description"]),
        )
        for e in found
    ]
    columns = ("id", "workflow", "state", "created", "updated", "description")
    _out(found, as_json, lambda: _table("executions (newest first)", columns, rows))


@app.command()
def execution(
    execution_id: EXECUTION_ID,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Show an execution: its state, input, output and tasks."""
    body = api_get(api, f"/v2/executions/{quote(execution_id, safe='')}", token)
    _show_execution(body, _tasks_of(api, token, execution_id), as_json)


def _send_json(method: str, api: str, path: str, token: str | None, body: Any) -> Any:
    content = json.dumps(body).encode()
    resp = api_request(method, api, path, token, content, content_type="application/json")
    if not resp.ok:
        raise api_failed(resp)
    return resp.json()


def _set_state(execution_id: str, state: str, api: str, token: str | None) -> None:
    path = f"/v2/executions/{quote(execution_id, safe='')}"
    changed = _send_json("PUT", api, path, token, {"state": state})
    print(f"{execution_id}: {changed['state']}")


def _state_command(state: str, doc: str) -> Callable[..., None]:
    def command(execution_id: EXECUTION_ID, api: API = DEFAULT_API, token: TOKEN = None) -> None:
        _set_state(execution_id, state, api, token)

    command.__doc__ = doc
    return command


app.command("pause")(
    _state_command("PAUSED", "Pause an execution: running tasks finish, no new task starts.")
)
app.command("resume")(_state_command("RUNNING", "Resume a paused execution where it stopped."))
app.command("cancel")(
    _state_command("CANCELLED", "Cancel an execution: its running tasks are cancelled.")
)


@app.command()
def tasks(
    execution_id: EXECUTION_ID,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List an execution's tasks: state, when, and what each returned or why it failed."""
    found = _tasks_of(api, token, execution_id)
    _out(found, as_json, lambda: _task_table(found, f"tasks of {execution_id}"))


@app.command()
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
            _state(a["state"]),
            _cut(a["input"]),
            _cut(a["output"] if a["state"] != "ERROR" else a["state_info"] or a["output"]),
            a["updated_at"] or a["created_at"] or "",
        )
        for a in found
    ]
    columns = ("id", "action", "state", "input", "output", "updated")
    _out(found, as_json, lambda: _table(f"action executions of {task_id}", columns, rows))
