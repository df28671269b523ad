"""`opendoctor topology | alarms | rca`: what a running service knows, for operators."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)


def topology(
    api: Annotated[str, typer.Option(help="opendoctor API URL")] = "http://127.0.0.1:8780",
    root: Annotated[
        str | None, typer.Option(help="vertex to start from, e.g. host:compute1")
    ] = None,
    depth: Annotated[int, typer.Option(min=0, max=10, help="hops from the root")] = 1,
    token: Annotated[
        str | None, typer.Option(help="X-Auth-Token (token mode); default: admin headers")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the graph as JSON")] = False,
) -> None:
    """Show the entity graph the service keeps: hosts, the servers they contain, states."""
    from rich.tree import Tree

    query = f"?depth={depth}" + (f"&root={root}" if root else "")
    body = _api_get(api, "/v1/topology" + query, token)
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
        return
    vertices = {v["key"]: v for v in body["vertices"]}
    children: dict[str, list[str]] = {}
    has_parent = set()
    for edge in body["edges"]:
        children.setdefault(edge["source"], []).append(edge["target"])
        has_parent.add(edge["target"])

    def label(key: str) -> str:
        v = vertices[key]
        colour = {"OK": "green", "ERROR": "red", "N/A": "dim"}.get(v["state"], "yellow")
        return f"{v['type']} [bold]{v['name'] or v['id']}[/bold] [{colour}]{v['state']}[/{colour}]"

    tops = [root] if root else sorted(k for k in vertices if k not in has_parent)
    forest = Tree("entity graph", hide_root=True)
    for top in tops:
        branch = forest.add(label(top))
        for child in sorted(children.get(top, []), key=lambda k: vertices[k]["name"] or k):
            branch.add(label(child))
    Console().print(forest)


def _api_get(api: str, path: str, token: str | None) -> Any:
    """GET an admin route of a running service, or exit with what went wrong."""
    from opendoctor.httpclient import HttpClient, HttpError

    headers = {"X-Auth-Token": token} if token else {"X-Project-Id": "admin", "X-Roles": "admin"}

    async def fetch() -> Any:
        http = HttpClient()
        try:
            return await http.get(api.rstrip("/") + path, headers=headers)
        finally:
            await http.close()

    try:
        resp = asyncio.run(fetch())
    except HttpError as exc:
        err.print(f"[red]cannot reach the API:[/red] {exc}")
        raise typer.Exit(1) from exc
    if not resp.ok:
        err.print(f"[red]HTTP {resp.status}:[/red] {resp.json()['error']['message']}")
        raise typer.Exit(1)
    return resp.json()


API = Annotated[str, typer.Option(help="opendoctor API URL")]
TOKEN = Annotated[
    str | None, typer.Option(help="X-Auth-Token (token mode); default: admin headers")
]
JSON_OUT = Annotated[bool, typer.Option("--json", help="print JSON")]


def alarms(
    api: API = "http://127.0.0.1:8780", token: TOKEN = None, as_json: JSON_OUT = False
) -> None:
    """Active alarms: faults, the alarms they deduce, the resources they are on."""
    body = _api_get(api, "/v1/alarms", token)
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
        return
    table = Table(title="active alarms")
    for col in ("alarm", "name", "on", "caused by", "state"):
        table.add_column(col)
    for a in body["alarms"]:
        cause = (a["caused_by"] or "").removeprefix("alarm:")
        table.add_row(a["id"], a["name"] or "", a["on"] or "", cause, a["state"])
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(
        ", ".join(f"{n} {state}" for state, n in sorted(body["counts"].items())) or "none"
    )


def rca(
    alarm_id: Annotated[str, typer.Argument(help="alarm id (a fault id, or fault/server)")],
    api: API = "http://127.0.0.1:8780",
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Why an alarm is raised: its chain of causes down to the root, and what it causes."""
    from rich.tree import Tree

    body = _api_get(api, f"/v1/rca/{alarm_id}", token)
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
        return

    def label(a: dict[str, Any]) -> str:
        on = a["on"]["key"] if a.get("on") else "?"
        return f"[bold]{a['name']}[/bold] on {on} [red]{a['state']}[/red] ({a['id']})"

    chain = [*reversed(body["causes"]), body["alarm"]]
    tree = Tree("root cause: " + label(chain[0]))
    node = tree
    for alarm in chain[1:]:
        node = node.add("causes " + label(alarm))
    for effect in body["effects"]:
        node.add("causes " + label(effect))
    Console(width=max(Console().width, 140)).print(tree)
