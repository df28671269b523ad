"""`opendoctor workflow validate | add | update | list | show | delete`: workflow files
checked here, and the definitions a running service holds (`/v2/workflows`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_failed, api_get, api_request
from opendoctor.cli.workflow_shared import (
    DEFAULT_API,
    NAME,
    NAMESPACE,
    err,
    make_table,
    print_json,
    print_out,
)

WORKFLOW_FILE = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, readable=True, help="a workflow file (YAML, version '2.0')"
    ),
]
PUBLIC = Annotated[bool, typer.Option("--public", help="every project may read and start them")]


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
    return make_table(title, ("id", "name", "namespace", "scope", "input", "updated"), rows)


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
            print_json({"valid": False, "workflows": [], "error": str(exc)})
        else:
            err.print(
                f"[red]{escape(str(file))} is not a valid workflow file:[/red]", soft_wrap=True
            )
            err.print(f"  {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print_json({"valid": True, "workflows": list(specs), "error": None})
        return
    for name, spec in specs.items():
        print(f"valid: {name} ({len(spec.tasks)} task{'s' if len(spec.tasks) != 1 else ''})")


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
    print_out(added, as_json, lambda: _workflow_table(added, "added"))


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
    print_out(updated, as_json, lambda: _workflow_table(updated, "updated"))


def list_workflows(api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False) -> None:
    """List the workflows: added ones, public ones and the built-in ones."""
    found = api_get(api, "/v2/workflows?limit=1000", token)["workflows"]
    print_out(found, as_json, lambda: _workflow_table(found, "workflows"))


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
        print_json(body)
        return
    text: str = body["definition"]
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


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
