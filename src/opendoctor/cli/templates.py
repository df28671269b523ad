"""`opendoctor template list | show | validate | add | delete`: the rule templates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_failed, api_get, api_request

app = typer.Typer(
    help="Rule templates: the correlation rules that decide what a fault means (who is "
    "told, what is marked down, which alarms are deduced).\n\n"
    "List and show those in force, check a file, add, replace or delete templates on a "
    "running service. Built-in and file templates cannot be deleted, but a template "
    "added under the same name replaces one until it is deleted again.",
    short_help="Rule templates: list, show, check, add, replace, delete.",
    no_args_is_help=True,
)

err = Console(stderr=True)

TEMPLATE_FILE = Annotated[
    Path,
    typer.Argument(exists=True, dir_okay=False, readable=True, help="the template, a YAML file"),
]
NAME = Annotated[str, typer.Argument(help="the template's name (see `opendoctor template list`)")]
DEFAULT_API = "http://127.0.0.1:8780"


def _print_json(body: Any) -> None:
    json.dump(body, sys.stdout, indent=2)
    print()


def _problems(resp_body: Any) -> list[str]:
    try:
        return [e["problem"] for e in resp_body["error"]["errors"]]
    except (KeyError, TypeError):
        return []


@app.command("list")
def list_templates(api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False) -> None:
    """List the rule templates in force.

    Each with where it came from (built-in, file, api), its number of scenarios and how
    many matches it holds in the graph now.
    """
    body = api_get(api, "/v1/templates", token)
    if as_json:
        _print_json(body)
        return
    table = Table(title="rule templates")
    for col in ("name", "origin", "scenarios", "matches", "description"):
        table.add_column(col, justify="right" if col in ("scenarios", "matches") else "left")
    for t in body:
        description = " ".join(t["description"].split())
        if len(description) > 80:
            description = description[:79] + "…"
        table.add_row(
            escape(t["name"]),
            escape(t["origin"] if t["origin"] == "built-in" else f"{t['origin']} ({t['source']})"),
            str(t["scenarios"]),
            str(t["matches"]),
            escape(description),
        )
    Console(width=max(Console().width, 140)).print(table)


@app.command()
def show(
    name: NAME, api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False
) -> None:
    """Print a template's YAML as it is in force (with --json: its details too)."""
    body = api_get(api, f"/v1/templates/{quote(name, safe='')}", token)
    if as_json:
        _print_json(body)
        return
    text: str = body["text"]
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def validate(
    file: TEMPLATE_FILE,
    builtins: Annotated[
        bool,
        typer.Option(
            "--builtins/--alone",
            help="check for cycles of causes together with the built-in templates "
            "(as a service that loads them would), or the file alone",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"valid": ..., "name": ..., "problems": [...]}')
    ] = False,
) -> None:
    """Check a template file here, without a running service.

    Prints every problem with its line and exits 1, or prints "valid" and exits 0.
    Cycles of causes are checked against the built-in templates too (--alone: not).
    """
    from opendoctor.inspector.templates import Template, TemplateError, compile_template

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    others: list[Template] = []
    if builtins:
        from opendoctor.inspector.templates.defaults import default_texts

        others = [compile_template(t, f"built-in {n}") for n, t in default_texts().items()]
    try:
        template = compile_template(text, str(file), others)
    except TemplateError as exc:
        if as_json:
            _print_json({"valid": False, "name": None, "problems": exc.problems})
        else:
            err.print(f"[red]{escape(str(file))} is not a valid template:[/red]", soft_wrap=True)
            for problem in exc.problems:
                err.print(f"  {escape(problem)}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json({"valid": True, "name": template.name, "problems": []})
        return
    scenarios = len(template.scenarios)
    print(f"valid: {template.name} ({scenarios} scenario{'s' if scenarios != 1 else ''})")


@app.command()
def add(
    file: TEMPLATE_FILE, api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False
) -> None:
    """Add a template to a running service, or replace the one of the same name.

    The template is checked, stored (it outlives restarts) and acts at once: the answer
    counts what it set off on faults already active. A built-in it replaces comes back
    when it is deleted. An invalid template changes nothing: every problem is printed
    with its line, and the exit status is 1.
    """
    resp = api_request(
        "POST",
        api,
        "/v1/templates",
        token,
        content=file.read_bytes(),
        content_type="application/yaml",
    )
    if resp.status == 422:
        body = resp.json()
        if as_json:
            _print_json(body)
        else:
            err.print(f"[red]{escape(str(file))} is not a valid template:[/red]", soft_wrap=True)
            for problem in _problems(body):
                err.print(f"  {escape(problem)}", soft_wrap=True)
        raise typer.Exit(1)
    if not resp.ok:
        raise api_failed(resp)
    body = resp.json()
    if as_json:
        _print_json(body)
        return
    effects = body["effects"]
    done = "added" if body["created"] else "replaced"
    print(
        f"{done} {body['name']}: {effects['notifications']} notifications, "
        f"{effects['mark_downs']} mark-downs, {effects['workflows']} workflows on current faults"
    )


@app.command()
def delete(name: NAME, api: API = DEFAULT_API, token: TOKEN = None) -> None:
    """Delete a template added through the API; what it deduced goes with it.

    Built-in and file templates cannot be deleted here (the answer says how to switch
    them off).
    """
    resp = api_request("DELETE", api, f"/v1/templates/{quote(name, safe='')}", token)
    if not resp.ok:
        raise api_failed(resp)
    print(f"deleted {name}")
