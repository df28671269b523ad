"""`opendoctor lab` commands for servers with named services, and for server groups."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opendoctor.lab.clibase import StateDirOption, call, fail, lab_url, out, state_dir_of
from opendoctor.lab.client import LabClient
from opendoctor.lab.servercli import ServerArg, server_id

GroupArg = Annotated[str, typer.Argument(help="Server group name or id.")]


def _url(state_dir: Any) -> str:
    return lab_url(state_dir_of(state_dir))


async def group_id(client: LabClient, name_or_id: str) -> str:
    groups = await client.server_groups()
    found = [g.id for g in groups if name_or_id in (g.id, g.name)]
    if len(found) != 1:
        fail(
            f"{'no' if not found else 'more than one'} server group named or with id {name_or_id!r}"
        )
    return found[0]


def create_server(
    name: Annotated[str, typer.Argument(help="The new server's name.")],
    project: Annotated[str, typer.Option(help="Its project.")] = "project-a",
    host: Annotated[str | None, typer.Option(help="Its host (default: the least loaded).")] = None,
    service: Annotated[
        list[str] | None, typer.Option(help="A named service of its application (repeatable).")
    ] = None,
    group: Annotated[str | None, typer.Option(help="A server group (name or id) to join.")] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Create a server (a VM that serves HTTP), optionally with services and a group."""

    async def create(c: LabClient) -> Any:
        gid = await group_id(c, group) if group else None
        return await c.create_server(name, project, host, services=service or None, group=gid)

    server = call(_url(state_dir), create)
    out.print(f"{server.name} ({server.id}) runs on {server.host}")


def rebuild_server(server: ServerArg, state_dir: StateDirOption = None) -> None:
    """Rebuild a server on its host: a fresh VM, same id and address, services healthy."""

    async def rebuild(c: LabClient) -> str:
        return (await c.rebuild(await server_id(c, server))).host

    out.print(f"{server} rebuilt on {call(_url(state_dir), rebuild)}")


def services(server: ServerArg, state_dir: StateDirOption = None) -> None:
    """Show a server's named services: health flag and restarts through its agent."""

    async def show(c: LabClient) -> dict[str, Any]:
        return await c.server_detail(await server_id(c, server))

    detail = call(_url(state_dir), show)
    if not detail["services"]:
        out.print(f"{detail['name']} has no named services")
    for s in detail["services"]:
        state = "healthy" if s["healthy"] else "unhealthy"
        out.print(f"{s['name']}: {state}, {s['restarts']} restart(s)")


def server_groups(state_dir: StateDirOption = None) -> None:
    """List the server groups with their members."""
    for g in call(_url(state_dir), lambda c: c.server_groups()):
        policy = g.policy or "no policy"
        out.print(f"{g.name} ({g.id}) {g.project_id}, {policy}: {len(g.members)} member(s)")


def create_server_group(
    name: Annotated[str, typer.Argument(help="The group's name.")],
    project: Annotated[str, typer.Option(help="Its project.")] = "project-a",
    policy: Annotated[
        str, typer.Option(help="affinity, anti-affinity, soft-affinity, soft-anti-affinity or ''.")
    ] = "",
    state_dir: StateDirOption = None,
) -> None:
    """Create a server group; servers join it when created with --group."""
    g = call(_url(state_dir), lambda c: c.create_server_group(name, project, policy))
    out.print(f"server group {g.name} created: {g.id}")


def delete_server_group(group: GroupArg, state_dir: StateDirOption = None) -> None:
    """Delete a server group (its servers stay)."""

    async def delete(c: LabClient) -> None:
        await c.delete_server_group(await group_id(c, group))

    call(_url(state_dir), delete)
    out.print(f"server group {group} deleted")


def register(app: typer.Typer) -> None:
    app.command("create-server")(create_server)
    app.command("rebuild-server")(rebuild_server)
    app.command("services")(services)
    app.command("server-groups")(server_groups)
    app.command("create-server-group")(create_server_group)
    app.command("delete-server-group")(delete_server_group)
