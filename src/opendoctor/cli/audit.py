"""`opendoctor audit`: who changed what through a running service's API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_get


def audit(
    api: API = "http://127.0.0.1:8780",
    token: TOKEN = None,
    project: Annotated[str | None, typer.Option(help="only this caller's project")] = None,
    user: Annotated[str | None, typer.Option(help="only this caller's user")] = None,
    since: Annotated[
        str | None, typer.Option(help="only from then on, ISO 8601 (2026-12-01T00:00:00Z)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="entries per page")] = 50,
    marker: Annotated[
        int | None, typer.Option(help="older than this entry (the last id of a page)")
    ] = None,
    as_json: JSON_OUT = False,
) -> None:
    """The audit trail, newest first: every change request (alarms, templates,
    topology, ...) with who sent it, what it was about and the status it got. Admins
    only. The last line names the --marker of the next page."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("project_id", project), ("user_id", user), ("since", since)):
        if value is not None:
            params[name] = value
    if marker is not None:
        params["marker"] = marker
    entries: list[dict[str, Any]] = api_get(api, "/v1/audit?" + urlencode(params), token)
    if as_json:
        json.dump(entries, sys.stdout, indent=2)
        print()
        return
    table = Table(title="audit trail")
    for col in ("id", "time (UTC)", "project", "user", "request", "about", "status"):
        table.add_column(col, overflow="fold")
    for e in entries:
        colour = "green" if e["status"] < 400 else "red"
        table.add_row(
            str(e["id"]),
            e["time"][:19].replace("T", " "),
            escape(e["project_id"] or ""),
            escape(e["user_id"] or ""),
            escape(f"{e['method']} {e['path']}"),
            escape(e["target"] or ""),
            f"[{colour}]{e['status']}[/{colour}]",
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    if len(entries) == limit:
        console.print(f"more: --marker {entries[-1]['id']}")
    elif not entries:
        console.print("no entries")
