"""`opendoctor lab` commands for one server's VM and for the events sink."""

from __future__ import annotations

import os
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from opendoctor.lab.clibase import StateDirOption, call, fail, lab_url, out, state_dir_of
from opendoctor.lab.client import LabClient
from opendoctor.lab.spec import EVENTS_TOKEN_ENV

ServerArg = Annotated[str, typer.Argument(help="Server name (e.g. vm1) or id.")]


class Role(StrEnum):
    active = "active"
    standby = "standby"


async def server_id(client: LabClient, name_or_id: str) -> str:
    """The id of the server with this id or, failing that, this name."""
    servers = await client.servers()
    found = next((s.id for s in servers if s.id == name_or_id), None) or next(
        (s.id for s in servers if s.name == name_or_id), None
    )
    if found is None:
        fail(f"no server named or with id {name_or_id!r}")
    return found


def _url(state_dir: Any) -> str:
    return lab_url(state_dir_of(state_dir))


def kill_server(server: ServerArg, state_dir: StateDirOption = None) -> None:
    """Kill a VM's process (SIGKILL). Prints T00, the time of the fault.

    The VIM is not told; the VM's host reports the exit to the events sink.
    """

    async def kill(c: LabClient) -> dict[str, Any]:
        return await c.kill_server(await server_id(c, server))

    fault = call(_url(state_dir), kill)
    t00 = float(fault["t00"])
    stamp = datetime.fromtimestamp(t00).isoformat(timespec="microseconds")
    out.print(f"{fault['server_name']} killed on {fault['host']}; T00 = {t00:.6f} ({stamp})")


def restart_server(server: ServerArg, state_dir: StateDirOption = None) -> None:
    """Hard-reboot a server: a new VM process on the same host (after a kill, say)."""

    async def restart(c: LabClient) -> str:
        return (await c.restart(await server_id(c, server))).host

    host = call(_url(state_dir), restart)
    out.print(f"{server} restarted on {host}")


def set_role(
    server: ServerArg,
    role: Annotated[Role, typer.Argument(help="'active' serves, 'standby' answers 503.")],
    state_dir: StateDirOption = None,
) -> None:
    """Make a server's application active or standby."""

    async def change(c: LabClient) -> dict[str, Any]:
        return await c.set_role(await server_id(c, server), role.value)

    result = call(_url(state_dir), change)
    out.print(f"{result['name']} is now {result['role']}")


def set_health(
    server: ServerArg,
    healthy: Annotated[
        bool, typer.Option("--healthy/--unhealthy", help="What the guest reports.")
    ] = True,
    service: Annotated[
        str | None, typer.Option(help="Set the flag of this named service instead.")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Set the health flag a server's guest reports through its heartbeat."""

    async def change(c: LabClient) -> dict[str, Any]:
        return await c.set_health(await server_id(c, server), healthy, service)

    result = call(_url(state_dir), change)
    what = f"{result['name']}'s {service}" if service else result["name"]
    out.print(f"{what} is now {'healthy' if healthy else 'unhealthy'}")


def events_sink(
    url: Annotated[
        str | None, typer.Argument(help="New URL that hosts PUT events to; omit to show.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Send events nowhere.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Show or set where the hosts send events about their VMs.

    The X-Auth-Token they send with them comes from OPENDOCTOR_LAB_EVENTS_TOKEN (a
    secret stays off the command line, where any user of the machine can read it)."""
    lab = _url(state_dir)
    token = os.environ.get(EVENTS_TOKEN_ENV) or None
    if clear or url is not None:
        status = call(lab, lambda c: c.set_events_sink(None if clear else url, token))
    else:
        status = call(lab, lambda c: c.events_sink())
    out.print(f"events sink: {status['url'] or '(none)'}" + (" (token set)" * status["token_set"]))
    for host, stats in status["hosts"].items():
        if "error" in stats:
            out.print(f"  {host}: {stats['error']}")
            continue
        out.print(
            f"  {host}: {stats['delivered']} delivered, {stats['pending']} pending, "
            f"{stats['failures']} failed attempts"
            + (f" ({stats['last_error']})" * bool(stats["last_error"]))
        )


def register(app: typer.Typer) -> None:
    app.command("kill-server")(kill_server)
    app.command("restart-server")(restart_server)
    app.command("set-role")(set_role)
    app.command("set-health")(set_health)
    app.command("events-sink")(events_sink)
