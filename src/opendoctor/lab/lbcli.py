"""`opendoctor lab lb ...`: the lab's load balancer, in the way of neutron's lb-* commands."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from opendoctor.lab.clibase import StateDirOption, call, fail, lab_url, out, state_dir_of
from opendoctor.lab.client import LabClient
from opendoctor.lab.servercli import server_id

app = typer.Typer(
    name="lb",
    help="The lab's load balancer: pools with a virtual IP each, and their members.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _member_id(members: list[dict[str, Any]], given: str) -> str:
    """A member's id from its id or an unambiguous start of it."""
    found = [m["id"] for m in members if m["id"] == given] or [
        m["id"] for m in members if m["id"].startswith(given)
    ]
    if len(found) != 1:
        fail(f"{'no' if not found else 'more than one'} member with id {given!r}")
    return str(found[0])


@app.command()
def pools(as_json: JsonOption = False, state_dir: StateDirOption = None) -> None:
    """List the pools (round robin each): VIP, enabled/all members, request counters."""
    result = call(lab_url(state_dir_of(state_dir)), lambda c: c.lb_pools())
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title="pools")
    table.add_column("id", overflow="fold")
    table.add_column("name", overflow="fold")
    for column in ("vip", "enabled", "requests", "errors"):
        table.add_column(column, no_wrap=True)
    for p in result:
        stats, members = p["stats"], p["members"]
        table.add_row(
            p["id"], p["name"], f"{p['vip_address']}:{p['vip_port']}",
            f"{sum(m['admin_state_up'] for m in members)}/{len(members)}",
            str(stats["requests"]), str(stats["upstream_errors"] + stats["no_member"]),
        )  # fmt: skip
    out.print(table)


@app.command()
def members(
    pool: Annotated[str | None, typer.Option(help="Only the members of this pool (id).")] = None,
    as_json: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """List members like `neutron lb-member-list`."""
    result = call(lab_url(state_dir_of(state_dir)), lambda c: c.lb_members(pool))
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table()
    columns = ("id", "address", "protocol_port", "weight", "admin_state_up", "status", "server")
    table.add_column("id", no_wrap=True, min_width=36)  # ids are what set-member takes
    for column in columns[1:]:
        table.add_column(column, overflow="fold")
    for m in result:
        colour = {"ACTIVE": "green", "INACTIVE": "yellow"}.get(m["status"], "red")
        table.add_row(
            m["id"], m["address"], str(m["protocol_port"]), str(m["weight"]),
            str(m["admin_state_up"]), f"[{colour}]{m['status']}[/{colour}]",
            m["server_name"] or "",
        )  # fmt: skip
    out.print(table)


@app.command("set-member")
def set_member(
    member_id: Annotated[str, typer.Argument(help="Member id (or an unambiguous start of it).")],
    enabled: Annotated[
        bool, typer.Option("--enable/--disable", help="admin_state_up true or false.")
    ],
    state_dir: StateDirOption = None,
) -> None:
    """Enable or disable a member: only enabled members get traffic."""

    async def change(c: LabClient) -> dict[str, Any]:
        return await c.set_member(_member_id(await c.lb_members(), member_id), enabled)

    m = call(lab_url(state_dir_of(state_dir)), change)
    out.print(f"member {m['id']} ({m['address']}:{m['port']}) admin_state_up={m['admin_state_up']}")


@app.command("create-pool")
def create_pool(
    name: Annotated[str, typer.Argument(help="Pool name.")],
    servers: Annotated[list[str], typer.Argument(help="Member servers (names or ids).")],
    disable: Annotated[
        list[str] | None, typer.Option(help="Add this member server disabled (repeatable).")
    ] = None,
    vip_port: Annotated[int, typer.Option(help="Port of the VIP.")] = 8080,
    state_dir: StateDirOption = None,
) -> None:
    """Create a pool with a VIP of its own in front of servers (members follow them)."""
    off = set(disable or [])

    async def create(c: LabClient) -> dict[str, Any]:
        specs: list[dict[str, Any] | str] = [
            {"server_id": await server_id(c, s), "admin_state_up": s not in off} for s in servers
        ]
        return await c.create_pool(name, specs, vip_port)

    p = call(lab_url(state_dir_of(state_dir)), create)
    out.print(f"pool {p['name']} ({p['id']}) at http://{p['vip_address']}:{p['vip_port']}/")


@app.command("delete-pool")
def delete_pool(
    pool_id: Annotated[str, typer.Argument(help="Pool id.")], state_dir: StateDirOption = None
) -> None:
    """Delete a pool: its VIP stops answering."""
    call(lab_url(state_dir_of(state_dir)), lambda c: c.delete_pool(pool_id))
    out.print(f"pool {pool_id} deleted")
