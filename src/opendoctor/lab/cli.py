"""`opendoctor lab ...`: start, inspect, break and repair the lab from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from opendoctor.config import default_state_dir
from opendoctor.controller.base import VimError
from opendoctor.lab.client import LabClient
from opendoctor.lab.runner import LabStartError, running_state, start_detached, stop
from opendoctor.lab.spec import LabSpec, split_projects

app = typer.Typer(
    name="lab",
    help=(
        "A small real cloud on this machine: compute hosts that answer heartbeats, VMs "
        "that serve HTTP, a VIM API, and fault injection (power off a host)."
    ),
    no_args_is_help=True,
)

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


class VmMode(StrEnum):
    process = "process"
    inline = "inline"


StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="OPENDOCTOR_LAB_DIR",
        help="Directory of the lab's lab.json and lab.log (default: <state dir>/lab, "
        "e.g. ~/.local/state/opendoctor/lab).",
        show_default=False,
    ),
]


def _dir(state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else default_state_dir() / "lab"


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def _lab_url(state_dir: Path) -> str:
    data = running_state(state_dir)
    if data is None:
        _fail(f"no lab is running from {state_dir} (start one with 'opendoctor lab up')")
    return str(data["url"])


def _call(url: str, action: Callable[[LabClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with LabClient(url) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except VimError as exc:
        _fail(str(exc))


async def _snapshot(client: LabClient) -> dict[str, Any]:
    hosts, servers = await asyncio.gather(client.host_details(), client.servers())
    return {"hosts": hosts, "servers": [_server_json(s) for s in servers]}


def _server_json(server: Any) -> dict[str, Any]:
    fields = ("id", "name", "host", "project_id", "status", "endpoint")
    return {f: getattr(server, f) for f in fields}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _print_tables(url: str, snapshot: dict[str, Any]) -> None:
    load: dict[str, int] = {}
    for s in snapshot["servers"]:
        load[s["host"]] = load.get(s["host"], 0) + 1
    hosts = Table(title=f"hosts ({url})")
    for column in ("name", "address", "state", "forced", "enabled", "alive", "pid"):
        hosts.add_column(column, no_wrap=True)
    hosts.add_column("servers", justify="right")
    for h in snapshot["hosts"]:
        alive = "[green]yes[/green]" if h["alive"] else "[red]no[/red]"
        hosts.add_row(
            h["name"], h["address"], h["state"], _yes(h["forced_down"]), _yes(h["enabled"]),
            alive, str(h["pid"] or "-"), str(load.get(h["name"], 0)),
        )  # fmt: skip
    servers = Table(title="servers")
    for column in ("name", "id", "host", "project", "status", "endpoint"):
        servers.add_column(column, overflow="fold")
    colours = {"ACTIVE": "green", "ERROR": "red", "SHUTOFF": "yellow"}
    for s in snapshot["servers"]:
        colour = colours.get(s["status"], "white")
        servers.add_row(
            s["name"], s["id"], s["host"], s["project_id"],
            f"[{colour}]{s['status']}[/{colour}]", s["endpoint"] or "",
        )  # fmt: skip
    out.print(hosts)
    out.print(servers)


@app.command()
def up(
    hosts: Annotated[int, typer.Option(help="Number of compute hosts (compute1..N).")] = 3,
    vms: Annotated[int, typer.Option(help="Number of VMs (vm1..M), spread round-robin.")] = 6,
    projects: Annotated[
        str, typer.Option(help="Comma-separated projects the VMs alternate between.")
    ] = "project-a,project-b",
    vm_mode: Annotated[
        VmMode,
        typer.Option(help="'process': one process per VM; 'inline': hosts serve their VMs."),
    ] = VmMode.process,
    ip_prefix: Annotated[
        str, typer.Option(help="Loopback prefix: hosts at PREFIX.1.i, VMs at PREFIX.2.j.")
    ] = "127.0",
    state_dir: StateDirOption = None,
) -> None:
    """Start a lab in the background and wait until every VM serves.

    Hosts answer UDP heartbeats, each VM answers HTTP GET with 'Served by <name>'.
    The lab runs until 'opendoctor lab down'; its log is in the state dir (lab.log).
    """
    directory = _dir(state_dir)
    try:
        spec = LabSpec(
            hosts=hosts, vms=vms, projects=split_projects(projects),
            vm_mode=vm_mode.value, ip_prefix=ip_prefix,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    running = running_state(directory)
    if running is not None:
        _fail(f"a lab is already running from {directory} at {running['url']}")
    with err.status(f"starting {hosts} hosts and {vms} VMs ..."):
        try:
            data = start_detached(spec, directory)
        except LabStartError as exc:
            _fail(str(exc))
    url = str(data["url"])
    out.print(f"lab up at [bold]{url}[/bold] (manager pid {data['pid']}, state in {directory})")
    _print_tables(url, _call(url, _snapshot))


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop the lab: every host and VM is taken down and lab.json is removed."""
    directory = _dir(state_dir)
    if not stop(directory):
        _fail(f"no lab is running from {directory}")
    out.print("lab stopped")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Show the hosts (what the VIM believes and whether they really run) and the servers."""
    directory = _dir(state_dir)
    url = _lab_url(directory)
    snapshot = _call(url, _snapshot)
    if as_json:
        out.print_json(json.dumps({"url": url, **snapshot}))
    else:
        _print_tables(url, snapshot)


@app.command("fail-host")
def fail_host(
    name: Annotated[str, typer.Argument(help="Host to power off, e.g. compute1.")],
    state_dir: StateDirOption = None,
) -> None:
    """Power off a host: it and its VMs die at once. Prints T00, the time of the fault.

    The VIM is not told: finding out is opendoctor's job.
    """
    url = _lab_url(_dir(state_dir))
    fault = _call(url, lambda c: c.fail_host(name))
    t00 = float(fault["t00"])
    stamp = datetime.fromtimestamp(t00).isoformat(timespec="microseconds")
    out.print(f"{name} powered off; T00 = {t00:.6f} ({stamp})")


@app.command("restore-host")
def restore_host(
    name: Annotated[str, typer.Argument(help="Host to power on again, e.g. compute1.")],
    state_dir: StateDirOption = None,
) -> None:
    """Power a failed host on again. It comes back empty (no VMs) and answers heartbeats."""
    url = _lab_url(_dir(state_dir))
    host = _call(url, lambda c: c.restore_host(name))
    out.print(f"{host.name} is running again at {host.address} (VIM state: {host.state})")
