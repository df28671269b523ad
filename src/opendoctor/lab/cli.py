"""`opendoctor lab ...`: start, inspect, break and repair the lab from the command line."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from opendoctor.lab import groupcli, lbcli, servercli
from opendoctor.lab.clibase import StateDirOption, call, err, fail, lab_url, out, state_dir_of, yes
from opendoctor.lab.client import LabClient
from opendoctor.lab.runner import LabStartError, running_state, start_detached, stop
from opendoctor.lab.spec import EVENTS_TOKEN_ENV, LabSpec, split_projects

app = typer.Typer(
    name="lab",
    help=(
        "A small real cloud on this machine: compute hosts that answer heartbeats, VMs "
        "that serve HTTP, a load balancer, a VIM API, and fault injection (power off a "
        "host, cut its link, kill a VM)."
    ),
    no_args_is_help=True,
)


class VmMode(StrEnum):
    process = "process"
    inline = "inline"


async def _snapshot(client: LabClient) -> dict[str, Any]:
    hosts, servers = await asyncio.gather(client.host_details(), client.server_details())
    return {"hosts": hosts, "servers": [_server_json(s) for s in servers]}


def _server_json(server: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "name", "host", "project_id", "status", "endpoint", "role", "healthy")
    return {f: server.get(f) for f in fields}


def _print_tables(url: str, snapshot: dict[str, Any]) -> None:
    load: dict[str, int] = {}
    for s in snapshot["servers"]:
        load[s["host"]] = load.get(s["host"], 0) + 1
    hosts = Table(title=f"hosts ({url})")
    for column in ("name", "address", "state", "forced", "enabled", "alive", "pid", "version"):
        hosts.add_column(column, no_wrap=True)
    hosts.add_column("servers", justify="right")
    for h in snapshot["hosts"]:
        alive = "[green]yes[/green]" if h["alive"] else "[red]no[/red]"
        # Versions are whatever an operator staged: shown as text, never as rich markup.
        version = escape(h.get("version") or "-")
        if h.get("staged_version"):
            version += escape(f" (next boot: {h['staged_version']})")
        hosts.add_row(
            h["name"], h["address"], h["state"], yes(h["forced_down"]), yes(h["enabled"]),
            alive, str(h["pid"] or "-"), version, str(load.get(h["name"], 0)),
        )  # fmt: skip
    servers = Table(title="servers")
    for column in ("name", "id", "host", "project", "status", "endpoint", "role", "healthy"):
        servers.add_column(column, overflow="fold")
    colours = {"ACTIVE": "green", "ERROR": "red", "SHUTOFF": "yellow"}
    for s in snapshot["servers"]:
        colour = colours.get(s["status"], "white")
        servers.add_row(
            s["name"], s["id"], s["host"], s["project_id"],
            f"[{colour}]{s['status']}[/{colour}]", s["endpoint"] or "",
            s["role"] or "", yes(bool(s["healthy"])),
        )  # fmt: skip
    out.print(hosts)
    for h in snapshot["hosts"]:
        if h.get("link_cut"):
            alt = h.get("alt_address")
            where = f"only at its alt address {alt}" if alt else "nowhere"
            out.print(f"[yellow]{h['name']}: link cut[/yellow] (heartbeats answered {where})")
        if loss := _loss_text(h.get("heartbeat_loss")):
            out.print(f"[yellow]{h['name']}: heartbeat answers lost[/yellow] ({loss})")
    out.print(servers)


def _loss_text(loss: dict[str, float] | None) -> str:
    """ "primary 5 %, alt 5 %" for the paths that drop answers; "" if none does."""
    parts = [f"{path} {share * 100:g} %" for path, share in (loss or {}).items() if share]
    return ", ".join(parts)


class LossPath(StrEnum):
    primary = "primary"
    alt = "alt"
    both = "both"


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
        str,
        typer.Option(
            help="Loopback prefix: hosts at PREFIX.1.i (alt addresses PREFIX.251.i), VMs at "
            "PREFIX.2.j, VIPs at PREFIX.250.n."
        ),
    ] = "127.0",
    events_url: Annotated[
        str | None,
        typer.Option(help="Where hosts PUT events about their VMs (e.g. the inspector)."),
    ] = None,
    heartbeat: Annotated[
        bool, typer.Option(help="Guest heartbeats between hosts and their VMs.")
    ] = True,
    services: Annotated[
        str, typer.Option(help="Comma-separated named services of every VM (e.g. web,db).")
    ] = "",
    server_group: Annotated[
        str | None, typer.Option(help="A server group of this name per project; its VMs join.")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Start a lab in the background and wait until every VM serves.

    Hosts answer UDP heartbeats, each VM answers HTTP GET with 'Served by <name>'.
    The lab runs until 'opendoctor lab down'; its log is in the state dir (lab.log).
    With --events-url, the hosts send OPENDOCTOR_LAB_EVENTS_TOKEN as X-Auth-Token.
    """
    directory = state_dir_of(state_dir)
    try:
        spec = LabSpec(
            hosts=hosts, vms=vms, projects=split_projects(projects),
            vm_mode=vm_mode.value, ip_prefix=ip_prefix, events_url=events_url,
            events_token=os.environ.get(EVENTS_TOKEN_ENV) or None, heartbeat=heartbeat,
            services=split_projects(services), server_group=server_group,
        )  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    running = running_state(directory)
    if running is not None:
        fail(f"a lab is already running from {directory} at {running['url']}")
    with err.status(f"starting {hosts} hosts and {vms} VMs ..."):
        try:
            data = start_detached(spec, directory)
        except LabStartError as exc:
            fail(str(exc))
    url = str(data["url"])
    out.print(f"lab up at [bold]{url}[/bold] (manager pid {data['pid']}, state in {directory})")
    _print_tables(url, call(url, _snapshot))


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop the lab: every host and VM is taken down and lab.json is removed."""
    directory = state_dir_of(state_dir)
    if not stop(directory):
        fail(f"no lab is running from {directory}")
    out.print("lab stopped")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Show the hosts (what the VIM believes, whether they really run, whether their
    link is cut) and the servers."""
    directory = state_dir_of(state_dir)
    url = lab_url(directory)
    snapshot = call(url, _snapshot)
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
    url = lab_url(state_dir_of(state_dir))
    fault = call(url, lambda c: c.fail_host(name))
    t00 = float(fault["t00"])
    stamp = datetime.fromtimestamp(t00).isoformat(timespec="microseconds")
    out.print(f"{name} powered off; T00 = {t00:.6f} ({stamp})")


@app.command("restore-host")
def restore_host(
    name: Annotated[str, typer.Argument(help="Host to power on again, e.g. compute1.")],
    state_dir: StateDirOption = None,
) -> None:
    """Power a failed host on again. It comes back empty (no VMs) and answers heartbeats."""
    url = lab_url(state_dir_of(state_dir))
    host = call(url, lambda c: c.restore_host(name))
    state = escape(f"VIM state: {host.state}, version {host.version or '-'}")
    out.print(f"{host.name} is running again at {host.address} ({state})")


@app.command("cut-link")
def cut_link(
    name: Annotated[str, typer.Argument(help="Host whose link to cut, e.g. compute1.")],
    state_dir: StateDirOption = None,
) -> None:
    """Cut a host's link: it stops answering heartbeats on its address. Prints T00.

    The host, its VMs, their guest heartbeats and its events carry on, and it still
    answers on its alt address (its second network): a monitor that probes both
    tells this from a dead host. The VIM is not told. Undo with 'restore-link'.
    """
    url = lab_url(state_dir_of(state_dir))
    fault = call(url, lambda c: c.cut_link(name))
    t00 = float(fault["t00"])
    stamp = datetime.fromtimestamp(t00).isoformat(timespec="microseconds")
    out.print(f"link of {name} cut; T00 = {t00:.6f} ({stamp})")


@app.command("restore-link")
def restore_link(
    name: Annotated[str, typer.Argument(help="Host whose link to restore, e.g. compute1.")],
    state_dir: StateDirOption = None,
) -> None:
    """Restore a cut link: the host answers heartbeats on its address again."""
    url = lab_url(state_dir_of(state_dir))
    host = call(url, lambda c: c.restore_link(name))
    out.print(f"link of {host.name} restored; it answers at {host.address} again")


@app.command("set-loss")
def set_loss(
    name: Annotated[str, typer.Argument(help="Host whose heartbeat answers to drop.")],
    fraction: Annotated[
        float, typer.Argument(help="Share of answers dropped, 0 <= FRACTION < 1 (0: none).")
    ],
    path: Annotated[
        LossPath, typer.Option(help="Which path drops them: its address, alt address, both.")
    ] = LossPath.both,
    state_dir: StateDirOption = None,
) -> None:
    """Make a host's heartbeat paths lossy: each answer is dropped at random with
    probability FRACTION, on each path on its own, until set again (0 turns it off) or
    the host restarts. The host and its VMs carry on; the VIM is not told.
    """
    if not 0 <= fraction < 1:
        fail(f"FRACTION must be at least 0 and below 1, got {fraction}")
    url = lab_url(state_dir_of(state_dir))
    host = call(url, lambda c: c.set_loss(name, fraction, path.value))
    loss = _loss_text(host.get("heartbeat_loss"))
    out.print(f"heartbeat answers of {name} lost: {loss or 'none'}")


servercli.register(app)
groupcli.register(app)
app.add_typer(lbcli.app, name="lb")
