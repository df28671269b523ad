"""`opendoctor maintenance ...`: planned maintenance on a running service, through its
Fenix-compatible API (`/v1/maintenance`): start a session over hosts, list sessions,
follow one host by host and instance by instance, pause, resume and cancel it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_failed, api_get, api_request
from opendoctor.cli.workflow_shared import (
    DEFAULT_API,
    cut,
    make_table,
    print_json,
    print_out,
    send_json,
)

app = typer.Typer(
    help="Planned maintenance: sessions that empty hosts one after another, with the "
    "consent of the owners of their instances, maintain them and put them back.\n\n"
    "Start a session, follow it host by host, pause, resume or cancel it. The same API "
    "(/v1/maintenance) serves Fenix's clients and Doctor's admin tool; each owner is told "
    "through its Aodh event alarm on maintenance.scheduled and answers on it.",
    short_help="Planned maintenance: start, follow, pause, resume, cancel sessions.",
    no_args_is_help=True,
)

SESSION_ID = Annotated[str, typer.Argument(help="the session's id (see `list`)")]
ENDED = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED")
COLOURS = {
    "MAINTENANCE_DONE": "green",
    "MAINTENANCE_FAILED": "red",
    "MAINTENANCE_CANCELLED": "yellow",
    "returned": "green",
    "done": "green",
    "failed": "red",
    "in_maintenance": "yellow",
    "draining": "cyan",
    "moving": "cyan",
}
HOST_ACTIONS = ("power_cycle", "dummy")


def _coloured(state: str | None) -> str:
    state = state or ""
    colour = COLOURS.get(state)
    return f"[{colour}]{escape(state)}[/{colour}]" if colour else escape(state)


def _path(session_id: str, tail: str = "") -> str:
    return f"/v1/maintenance/{quote(session_id, safe='')}{tail}"


def _host_action(text: str) -> dict[str, Any]:
    plugin, sep, name = text.partition(":")
    if plugin == "workflow" and sep and name:
        return {"plugin": "workflow", "type": "host", "metadata": {"workflow": name}}
    if sep or plugin not in HOST_ACTIONS:
        raise typer.BadParameter(
            f"{text!r}: give power_cycle, dummy or workflow:NAME", param_hint="--action"
        )
    return {"plugin": plugin, "type": "host", "metadata": {}}


def _metadata(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE (a string: "2026.10" stays what it says) or KEY:=JSON (httpie's way)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.rstrip(":"):
            raise typer.BadParameter(
                f"{pair!r}: give KEY=VALUE or KEY:=JSON", param_hint="--metadata"
            )
        if not key.endswith(":"):
            values[key] = raw
            continue
        try:
            values[key[:-1]] = json.loads(raw)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{pair!r}: not JSON: {exc}", param_hint="--metadata"
            ) from None
    return values


@app.command()
def start(
    hosts: Annotated[
        list[str] | None, typer.Argument(help="the hosts to maintain (taken out emptiest first)")
    ] = None,
    all_hosts: Annotated[
        bool, typer.Option("--all", help="every host the service knows, instead of naming them")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help='when to start: "YYYY-MM-DD HH:MM:SS" in UTC (or ISO 8601); default now. '
            "The owners are asked at once, and have until then to make ready.",
        ),
    ] = None,
    actions: Annotated[
        list[str] | None,
        typer.Option(
            "--action",
            help="what is done to each emptied host: power_cycle (through its BMC), dummy "
            "(nothing: drain and return) or workflow:NAME (a workflow given the host); "
            "default: the service's maintenance.default_host_action",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata",
            "-m",
            help="KEY=VALUE handed to the owners with each notice (KEY:=JSON for a value "
            "that is not a string: count:=2, hosts:='[\"c1\"]'); repeat for more. "
            "max_parallel_hosts:=2 takes up to 2 hosts out at once where the constraints "
            "allow",
        ),
    ] = None,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Start a maintenance session; print its id (whole, for the next command)."""
    if bool(hosts) == all_hosts:
        raise typer.BadParameter("name the hosts, or give --all (not both)", param_hint="HOSTS")
    body: dict[str, Any] = {
        "hosts": list(hosts or []),
        "state": "MAINTENANCE",
        "workflow": "default",
        "metadata": _metadata(metadata or []),
        "actions": [_host_action(a) for a in actions or []],
    }
    if at is not None:
        body["maintenance_at"] = at
    started = send_json("POST", api, "/v1/maintenance", token, body)
    print_json(started) if as_json else print(started["session_id"])


@app.command("list")
def list_sessions(
    active: Annotated[bool, typer.Option("--active", help="only sessions not ended")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 50,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List maintenance sessions, newest first: state, progress, hosts."""
    query: dict[str, Any] = {"limit": limit}
    if active:
        query["active"] = "true"
    found = api_get(api, "/v1/maintenance?" + urlencode(query), token)["sessions"]
    rows = [
        (
            s["session_id"],
            _coloured(s["state"]),
            f"{s['percent_done']}%",
            cut(", ".join(s["hosts"])),
            s["maintenance_at"] or "",
            s["created"] or "",
            s["updated"] or "",
        )
        for s in found
    ]
    columns = ("id", "state", "done", "hosts", "maintenance at", "created", "updated")
    print_out(found, as_json, lambda: make_table("maintenance sessions", columns, rows))


def _hosts_table(detail: dict[str, Any]) -> Table:
    rows = [
        (
            escape(h["name"]),
            _coloured(h["state"]),
            h["started"] or "",
            h["finished"] or "",
            escape(h["version_before"] or ""),
            escape(h["version_after"] or ""),
            cut(h["error"]),
        )
        for h in detail["host_progress"]
    ]
    columns = ("host", "state", "started", "finished", "version before", "after", "problem")
    return make_table("hosts", columns, rows)


def _instances_table(detail: dict[str, Any]) -> Table:
    rows = [
        (
            i["instance_id"],
            escape(i["name"]),
            escape(i["project_id"]),
            escape(i["host"]),
            escape(i["action"] or ""),
            _coloured(i["state"]),
            escape(i["to_host"] or ""),
            cut(i["error"]),
        )
        for i in detail["instances"]
    ]
    columns = ("id", "name", "project", "host", "action", "state", "to host", "problem")
    return make_table("instances", columns, rows)


def _projects_table(detail: dict[str, Any]) -> Table:
    rows = [
        (
            escape(p["project_id"]),
            escape(p["asked"] or ""),
            p["asked_at"] or "",
            escape(p["reply"] or ("(default)" if p["defaulted"] else "")),
            p["replied_at"] or "",
        )
        for p in detail["projects"]
    ]
    columns = ("project", "asked", "at", "answer", "answered")
    return make_table("owners", columns, rows)


def _view(detail: dict[str, Any]) -> RenderableType:
    state = detail["state"]
    lines = [f"[bold]session[/bold] {detail['session_id']}: {_coloured(state)}"]
    if detail["paused"]:
        lines.append("[yellow]paused by the admin[/yellow]")
    if detail["cancel_requested"] and state not in ENDED:
        lines.append("[yellow]cancel requested[/yellow]")
    for key in ("waiting", "error", "current_host", "maintenance_at", "ended"):
        if detail.get(key):
            lines.append(f"{key.replace('_', ' ')}: {escape(str(detail[key]))}")
    bar = ProgressBar(total=100, completed=detail["percent_done"], width=50)
    parts: list[RenderableType] = [
        Text.from_markup("\n".join(lines)),
        Group(bar, Text(f"{detail['percent_done']}% of the hosts returned")),
        _hosts_table(detail),
    ]
    if detail["instances"]:
        parts.append(_instances_table(detail))
    if detail["projects"]:
        parts.append(_projects_table(detail))
    return Group(*parts)


@app.command()
def status(
    session_id: SESSION_ID,
    watch: Annotated[
        bool, typer.Option("--watch", help="refresh until the session ends (or --timeout)")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="--watch: seconds between looks")] = 1.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="--watch: give up after this")] = 3600.0,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Show a session: its progress, each host and instance, what each owner was asked.

    Per host: its state, when it started and finished, its version before and after. Per
    instance: its owner, the action agreed, its state and where it went.

    With --watch the exit status is 0 if it ended done, 1 if it failed or was cancelled,
    2 if it did not end within --timeout (it goes on).
    """
    path = _path(session_id, "/detail")
    detail = api_get(api, path, token)
    console = Console(width=max(Console().width, 160))
    if watch:
        detail = _watch(api, token, path, detail, interval, timeout, None if as_json else console)
    if as_json:
        print_json(detail)
    elif not watch:
        console.print(_view(detail))
    if watch and detail["state"] not in ENDED:
        raise typer.Exit(2)
    if watch and detail["state"] != "MAINTENANCE_DONE":
        raise typer.Exit(1)


def _watch(
    api: str,
    token: str | None,
    path: str,
    detail: dict[str, Any],
    interval: float,
    timeout: float,
    console: Console | None,
) -> dict[str, Any]:
    """The session's detail once it has ended, or at `timeout`; shown on `console` as it
    goes (the last view stays)."""
    deadline = time.monotonic() + timeout

    def looks() -> Iterator[dict[str, Any]]:
        nonlocal detail
        while detail["state"] not in ENDED and time.monotonic() < deadline:
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
            detail = api_get(api, path, token)
            yield detail

    if console is None:
        for _ in looks():
            pass
        return detail
    with Live(_view(detail), console=console, auto_refresh=False) as live:
        for seen in looks():
            live.update(_view(seen), refresh=True)
    return detail


def _said(session: dict[str, Any]) -> str:
    state = session["state"]
    return f"{session['session_id']}: {state}{', paused' if session['paused'] else ''}"


@app.command()
def pause(session_id: SESSION_ID, api: API = DEFAULT_API, token: TOKEN = None) -> None:
    """Pause a session: it stops at its next safe point (a move under way ends first)."""
    print(_said(send_json("PUT", api, _path(session_id), token, {"action": "pause"})))


@app.command()
def resume(session_id: SESSION_ID, api: API = DEFAULT_API, token: TOKEN = None) -> None:
    """Resume a paused session where it stopped."""
    print(_said(send_json("PUT", api, _path(session_id), token, {"action": "resume"})))


@app.command()
def cancel(session_id: SESSION_ID, api: API = DEFAULT_API, token: TOKEN = None) -> None:
    """Cancel a session: it stops at its next safe point.

    Moves under way end, a host out of service is put back, and the session ends
    MAINTENANCE_CANCELLED (follow it with `status --watch`)."""
    resp = api_request("DELETE", api, _path(session_id), token)
    if not resp.ok:
        raise api_failed(resp)
    session = resp.json()
    ended = session["state"] in ENDED
    print(_said(session) + ("" if ended else ", cancel requested"))
