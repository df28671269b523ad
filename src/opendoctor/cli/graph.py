"""`opendoctor topology | alarms | rca`: what a running service knows, for operators."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from opendoctor.infra.httpclient import Response

err = Console(stderr=True)


def topology(
    api: Annotated[str, typer.Option(help="opendoctor API URL")] = "http://127.0.0.1:8780",
    root: Annotated[
        str | None, typer.Option(help="vertex to start from, e.g. host:compute1")
    ] = None,
    depth: Annotated[int, typer.Option(min=0, max=10, help="hops from the root")] = 1,
    query: Annotated[
        str | None,
        typer.Option(
            help='keep only the vertices a JSON filter matches, e.g. {"==": {"type": "server"}} '
            'or {"and": [{"==": {"type": "host"}}, {"!=": {"state": "ok"}}]}; quote it for '
            "the shell (operators and fields: docs/api.md)"
        ),
    ] = None,
    token: TOKEN = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the graph as JSON")] = False,
) -> None:
    """Show the entity graph the service keeps: hosts, the servers they contain, states."""
    from rich.tree import Tree

    params: dict[str, str | int] = {"depth": depth}
    if root:
        params["root"] = root
    if query is not None:
        params["query"] = query
    body = api_get(api, "/v1/topology?" + urlencode(params), token)
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
        name = escape(v["name"] or v["id"])
        return f"{escape(v['type'])} [bold]{name}[/bold] [{colour}]{escape(v['state'])}[/{colour}]"

    # A query may leave out the root: then each kept vertex without a parent is a top.
    if root is not None and root in vertices:
        tops = [root]
    else:
        tops = sorted(k for k in vertices if k not in has_parent)
    if not vertices:
        Console().print("no vertices" + (" match the query" if query is not None else ""))
        return
    forest = Tree("entity graph", hide_root=True)
    for top in tops:
        branch = forest.add(label(top))
        for child in sorted(children.get(top, []), key=lambda k: vertices[k]["name"] or k):
            branch.add(label(child))
    Console().print(forest)


def api_request(
    method: str,
    api: str,
    path: str,
    token: str | None,
    content: bytes | None = None,
    content_type: str | None = None,
) -> Response:
    """Call a route of a running service; exit with what went wrong if it cannot be
    reached. The caller judges the status."""
    from opendoctor.infra.httpclient import HttpClient, HttpError

    headers = {"X-Auth-Token": token} if token else {"X-Project-Id": "admin", "X-Roles": "admin"}
    if content_type is not None:
        headers["content-type"] = content_type

    async def call() -> Response:
        http = HttpClient()
        try:
            return await http.request(
                method, api.rstrip("/") + path, headers=headers, content=content
            )
        finally:
            await http.close()

    try:
        return asyncio.run(call())
    except HttpError as exc:
        err.print(f"[red]cannot reach the API:[/red] {exc}")
        raise typer.Exit(1) from exc


def api_failed(resp: Response) -> typer.Exit:
    """Say what the API answered (its error message) and return the exit to raise."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.body.decode(errors="replace")[:500]
    err.print(f"[red]HTTP {resp.status}:[/red] {escape(message)}")
    return typer.Exit(1)


def api_get(api: str, path: str, token: str | None) -> Any:
    """GET an admin route of a running service, or exit with what went wrong."""
    resp = api_request("GET", api, path, token)
    if not resp.ok:
        raise api_failed(resp)
    return resp.json()


API = Annotated[str, typer.Option(help="opendoctor API URL")]
# A token on a command line is every local user's to read: the environment is the way.
TOKEN = Annotated[
    str | None,
    typer.Option(
        envvar="OPENDOCTOR_API_TOKEN",
        show_envvar=True,
        help="X-Auth-Token (token mode); better set in OPENDOCTOR_API_TOKEN, out of the "
        "process list; default: admin headers",
    ),
]
JSON_OUT = Annotated[bool, typer.Option("--json", help="print JSON")]


def alarms(
    api: API = "http://127.0.0.1:8780",
    token: TOKEN = None,
    history: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="also show the newest N raise/clear records (in --json too, as history)",
        ),
    ] = 0,
    as_json: JSON_OUT = False,
) -> None:
    """Active alarms: faults and the alarms the rule templates deduce from them.

    Each with the resource it is on, its cause, and the template that deduced it.
    --history N adds the newest N raise/clear records.
    """
    body = api_get(api, "/v1/alarms" + (f"?history={history}" if history else ""), token)
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
        return
    table = Table(title="active alarms")
    for col in ("alarm", "name", "on", "caused by", "deduced by", "state"):
        table.add_column(col)
    for a in body["alarms"]:
        cause = (a.get("caused_by") or "").removeprefix("alarm:")
        table.add_row(
            *(
                escape(str(x))
                for x in (a["id"], a["name"] or "", a["on"] or "", cause, _deduced_by(a))
            ),
            _severity(a["state"]),
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(
        ", ".join(f"{n} {state}" for state, n in sorted(body["counts"].items())) or "none"
    )
    if history:
        console.print(_history_table(body.get("history", [])))


def _deduced_by(alarm: dict[str, Any]) -> str:
    """The template that deduced the alarm; empty for a fault's own alarm."""
    if alarm.get("template"):
        return str(alarm["template"])
    return "(a template)" if alarm.get("deduced") else ""


def _severity(state: str) -> str:
    colour = {"CRITICAL": "red", "SEVERE": "red", "WARNING": "yellow"}.get(state, "white")
    return f"[{colour}]{escape(state)}[/{colour}]"


def _history_table(records: list[dict[str, Any]]) -> Table:
    from datetime import datetime

    table = Table(title=f"alarm history (newest {len(records)}, newest first)")
    for col in ("time", "change", "alarm", "on", "caused by", "deduced", "severity"):
        table.add_column(col)
    for r in records:
        when = datetime.fromtimestamp(r["time"]).strftime("%m-%d %H:%M:%S.%f")[:-3]
        change = r["change"]
        colour = "red" if change == "raised" else "green"
        table.add_row(
            when,
            f"[{colour}]{escape(change)}[/{colour}]",
            escape(r.get("name") or r["alarm"].removeprefix("alarm:")),
            escape(r.get("on") or ""),
            escape((r.get("caused_by") or "").removeprefix("alarm:")),
            "yes" if r.get("deduced") else "",
            _severity(r.get("severity") or ""),
        )
    return table


def rca(
    alarm_id: Annotated[
        str,
        typer.Argument(
            help="alarm id: a fault id, or <alarm name>@<resource key> for a deduced alarm, "
            "e.g. instance.host_down@server:<id> (the alarm column of `opendoctor alarms`)"
        ),
    ],
    api: API = "http://127.0.0.1:8780",
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Why an alarm is raised: its chain of causes down to the root, and what it causes."""
    from rich.tree import Tree

    body = api_get(api, f"/v1/rca/{alarm_id}", token)
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        print()
        return

    def label(a: dict[str, Any]) -> str:
        on = a["on"]["key"] if a.get("on") else "?"
        name, state, id_ = (escape(str(a[k])) for k in ("name", "state", "id"))
        return f"[bold]{name}[/bold] on {escape(on)} [red]{state}[/red] ({id_})"

    chain = [*reversed(body["causes"]), body["alarm"]]
    tree = Tree("root cause: " + label(chain[0]))
    node = tree
    for alarm in chain[1:]:
        node = node.add("causes " + label(alarm))
    for effect in body["effects"]:
        node.add("causes " + label(effect))
    Console(width=max(Console().width, 140)).print(tree)
