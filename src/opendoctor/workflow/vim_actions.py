"""Actions on the VIM (`vim.*`), on a host's power (`fence.power_off`), and the names
Mistral users know from its OpenStack actions (`nova.*`, novaclient's parameter names).

Each goes through the toolbox's `VimDriver`, so a workflow moves servers the way
recovery does, on whichever VIM is configured; a `VimError` becomes an `ActionError`
whose result carries the VIM's status (404: no such server or host).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from opendoctor.core.model import Host, Server
from opendoctor.core.ports import FenceError, VimDriver, VimError
from opendoctor.workflow.actions import (
    ActionContext,
    ActionDef,
    ActionError,
    ActionFn,
    Param,
    Toolbox,
    boolean,
    define,
    optional_string,
    string,
)

COMPUTE = "nova-compute"
STATES = ("error", "active")  # what reset-state takes, in Nova as in the lab


def server_dict(server: Server) -> dict[str, Any]:
    """A server as actions return it (what `task().result` shows)."""
    return {
        "id": server.id,
        "name": server.name,
        "host": server.host,
        "status": server.status,
        "project_id": server.project_id,
    }


def host_dict(host: Host) -> dict[str, Any]:
    return {
        "name": host.name,
        "state": host.state,
        "enabled": host.enabled,
        "forced_down": host.forced_down,
    }


@contextlib.contextmanager
def vim_errors(action: str) -> Iterator[None]:
    try:
        yield
    except VimError as exc:
        raise ActionError(f"{action}: {exc}", {"error": str(exc), "status": exc.status}) from None


def _state(given: dict[str, Any], name: str, action: str) -> str:
    state = string(given, name, action).lower()
    if state not in STATES:
        raise ActionError(f"{action}: {name} must be one of {', '.join(STATES)}, got {state!r}")
    return state


def _compute(given: dict[str, Any], action: str) -> None:
    binary = string(given, "binary", action)
    if binary != COMPUTE:
        raise ActionError(f"{action}: only the {COMPUTE} service is managed, not {binary!r}")


Move = Callable[[str, str | None], Awaitable[Server]]


def _vim_actions(vim: VimDriver) -> list[ActionDef]:
    def mover(name: str, verb: str, server: str, host: str) -> ActionFn:
        move: Move = getattr(vim, verb)  # evacuate, migrate, live_migrate

        async def run(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
            server_id = string(given, server, name)
            target = optional_string(given, host, name)
            with vim_errors(name):
                return server_dict(await move(server_id, target))

        return run

    def power(name: str, on: bool, server: str) -> ActionFn:
        async def run(given: dict[str, Any], ctx: ActionContext) -> None:
            server_id = string(given, server, name)
            with vim_errors(name):
                await (vim.start if on else vim.stop)(server_id)

        return run

    def reset(name: str, server: str) -> ActionFn:
        async def run(given: dict[str, Any], ctx: ActionContext) -> None:
            server_id, state = string(given, server, name), _state(given, "state", name)
            with vim_errors(name):
                await vim.reset_state(server_id, state)

        return run

    def down(name: str, flag: str, nova: bool = False) -> ActionFn:
        async def run(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
            if nova:
                _compute(given, name)
            host, forced = string(given, "host", name), boolean(given, flag, name)
            with vim_errors(name):
                await vim.force_down(host, forced)
            return {"host": host, "forced_down": forced}

        return run

    def enable(name: str, enabled: bool, nova: bool = False) -> ActionFn:
        async def run(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
            if nova:
                _compute(given, name)
            host = string(given, "host", name)
            with vim_errors(name):
                await vim.set_host_enabled(host, enabled)
            return {"host": host, "enabled": enabled}

        return run

    async def list_servers(given: dict[str, Any], ctx: ActionContext) -> list[dict[str, Any]]:
        host = optional_string(given, "host", "vim.list_servers")
        with vim_errors("vim.list_servers"):
            found = await vim.list_servers()
        return [server_dict(s) for s in found if host is None or s.host == host]

    async def list_hosts(given: dict[str, Any], ctx: ActionContext) -> list[dict[str, Any]]:
        with vim_errors("vim.list_hosts"):
            return [host_dict(h) for h in await vim.list_hosts()]

    async def get_server(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        action = "nova.servers_get"
        server_id = string(given, "server", action)
        with vim_errors(action):
            found = await vim.list_servers()
        for s in found:
            if s.id == server_id:
                return server_dict(s)
        message = f"{action}: no server {server_id}"
        raise ActionError(message, {"error": message, "status": 404})

    sid, srv = Param("server_id", True), Param("server", True)
    host, target = Param("host", True), Param("target_host")
    binary = Param("binary", default=COMPUTE)
    return [
        define("vim.force_down", [host, Param("down", default=True)],
               down("vim.force_down", "down"),
               "Mark a host's compute service down (or up again).", safe=True),
        define("vim.reset_state", [sid, Param("state", default="error")],
               reset("vim.reset_state", "server_id"),
               "Set a server's status: error or active.", safe=True),
        *(
            define(f"vim.{verb}", [sid, target],
                   mover(f"vim.{verb}", verb, "server_id", "target_host"),
                   f"{verb.replace('_', ' ').capitalize()} a server; the server once moved.")
            for verb in ("evacuate", "migrate", "live_migrate")
        ),
        define("vim.stop", [sid], power("vim.stop", False, "server_id"), "Power a server off."),
        define("vim.start", [sid], power("vim.start", True, "server_id"), "Power a server on."),
        define("vim.disable_host", [host], enable("vim.disable_host", False),
               "Stop scheduling onto a host.", safe=True),
        define("vim.enable_host", [host], enable("vim.enable_host", True),
               "Schedule onto a host again.", safe=True),
        define("vim.list_servers", [Param("host")], list_servers,
               "Every server, or those of `host`.", safe=True),
        define("vim.list_hosts", [], list_hosts, "Every compute host.", safe=True),
        # novaclient's names, as Mistral's generated OpenStack actions take them.
        define("nova.servers_migrate", [srv, Param("host")],
               mover("nova.servers_migrate", "migrate", "server", "host"),
               "Cold-migrate a server."),
        define("nova.servers_live_migrate",
               [srv, Param("host"), Param("block_migration"), Param("disk_over_commit")],
               mover("nova.servers_live_migrate", "live_migrate", "server", "host"),
               "Live-migrate a server (the VIM decides block migration)."),
        define("nova.servers_evacuate", [srv, Param("host"), Param("on_shared_storage")],
               mover("nova.servers_evacuate", "evacuate", "server", "host"),
               "Rebuild a server of a failed host elsewhere."),
        define("nova.servers_get", [srv], get_server, "A server.", safe=True),
        define("nova.servers_stop", [srv], power("nova.servers_stop", False, "server"),
               "Power a server off."),
        define("nova.servers_start", [srv], power("nova.servers_start", True, "server"),
               "Power a server on."),
        define("nova.servers_reset_state", [srv, Param("state", default="error")],
               reset("nova.servers_reset_state", "server"),
               "Set a server's status: error or active.", safe=True),
        define("nova.services_force_down",
               [host, binary, Param("force_down", default=True)],
               down("nova.services_force_down", "force_down", nova=True),
               "Mark a host's nova-compute down (or up again).", safe=True),
        define("nova.services_disable", [host, binary],
               enable("nova.services_disable", False, nova=True),
               "Stop scheduling onto a host.", safe=True),
        define("nova.services_enable", [host, binary],
               enable("nova.services_enable", True, nova=True),
               "Schedule onto a host again.", safe=True),
    ]  # fmt: skip


def vim_actions(toolbox: Toolbox) -> list[ActionDef]:
    async def power_off(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        if toolbox.fence is None:
            raise ActionError("fence.power_off: no fencing is configured")
        host = string(given, "host", "fence.power_off")
        try:
            await toolbox.fence(host)
        except FenceError as exc:
            raise ActionError(f"fence.power_off: {host}: {exc}", {"error": str(exc)}) from None
        return {"host": host, "power": "off"}

    fence = define(
        "fence.power_off",
        [Param("host", True)],
        power_off,
        "Power a host off through its BMC, confirmed.",
        safe=True,  # powering off what is off changes nothing
    )
    return [*_vim_actions(toolbox.vim), fence]
