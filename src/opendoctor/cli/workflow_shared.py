"""What the `opendoctor workflow` commands share: the service's address, the arguments
more than one command takes, the calls that send JSON, and the printing of tables,
states and JSON (ids printed whole, so they can be pasted into the next command)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import api_failed, api_request

err = Console(stderr=True)
DEFAULT_API = "http://127.0.0.1:8780"
FINISHED = ("SUCCESS", "ERROR", "CANCELLED")
COLOURS = {"SUCCESS": "green", "ERROR": "red", "CANCELLED": "yellow", "PAUSED": "yellow"}

NAME = Annotated[str, typer.Argument(help="the workflow's name or id")]
NAMESPACE = Annotated[str, typer.Option(help="the workflows' namespace (default: none)")]


def print_json(body: Any) -> None:
    json.dump(body, sys.stdout, indent=2)
    print()


def print_out(body: Any, as_json: bool, table: Callable[[], Table]) -> None:
    """`body` as JSON, or the table `table` makes of it."""
    if as_json:
        print_json(body)
    else:
        # Ids are printed whole: a cut id cannot be pasted into the next command.
        Console(width=max(Console().width, 160)).print(table())


def make_table(title: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col == "id")
    for row in rows:
        table.add_row(*row)
    return table


def state_markup(state: str | None) -> str:
    """An execution's, task's or action's state, in its colour."""
    state = state or ""
    colour = COLOURS.get(state)
    return f"[{colour}]{escape(state)}[/{colour}]" if colour else escape(state)


def cut(text: str | None) -> str:
    """At most 80 characters of `text`, escaped for a table."""
    text = text or ""
    return escape(text if len(text) <= 80 else text[:79] + "…")


def send_json(method: str, api: str, path: str, token: str | None, body: Any) -> Any:
    content = json.dumps(body).encode()
    resp = api_request(method, api, path, token, content, content_type="application/json")
    if not resp.ok:
        raise api_failed(resp)
    return resp.json()
