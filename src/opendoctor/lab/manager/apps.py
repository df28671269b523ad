"""The application inside a server (its role, health flag and named services), and
rebuilding a server.

A rebuild re-creates the VM on its own host, as `nova rebuild` does from the server's
image: a fresh process, the same id and address, the application's services healthy.
A server's services have health flags (set through the lab API, reported by the VM's
guest agent) and restart counts; their truth is in the VM, whose agent may restart a
service on the service's request, so the records take the hosts' view when read.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from opendoctor.lab.manager.hostctl import HostCallError
from opendoctor.lab.manager.records import HostRecord, LabError, ServerRecord
from opendoctor.lab.procs.vm import ROLES

REFRESH_TIMEOUT = 2.0

if TYPE_CHECKING:
    from opendoctor.lab.manager.state import Lab


async def rebuild(lab: Lab, server_id: str) -> ServerRecord:
    server = lab.server(server_id)
    async with lab.lock(server_id):
        host = lab.host(server.host)
        if not host.alive or host.forced_down:
            raise LabError(
                409, f"host {host.name} of server {server.name} is down: evacuate it instead"
            )
        await lab.halt_vm(host, server)
        server.healthy = True
        server.services = dict.fromkeys(server.services, True)
        server.restarts = {}
        await lab.run_vm(host, server, announce=True)
        server.rebuilds += 1
        server.status = "ACTIVE"
        lab.emit_server(server)
    return server


def check_role(role: str) -> str:
    if role not in ROLES:
        raise LabError(400, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


async def set_app(
    lab: Lab,
    server_id: str,
    *,
    role: str | None = None,
    healthy: bool | None = None,
    service: str | None = None,
) -> ServerRecord:
    """Change the role and/or health flag of the server's application (or the flag of
    one of its named services). A VM that does not run now takes them when it next
    starts, wherever that is."""
    server = lab.server(server_id)
    change: dict[str, Any] = {}
    if role is not None:
        change["role"] = check_role(role)
    if service is not None:
        if service not in server.services:
            raise LabError(400, f"'service': server {server.name} has no service {service!r}")
        change["service"] = service
    if healthy is not None:
        change["healthy"] = healthy
    async with lab.lock(server_id):
        host = lab.hosts[server.host]
        if change and host.alive:
            try:
                answer = await host.proc.set_vm(server.name, **change)
            except HostCallError as exc:
                if "no vm named" not in str(exc):
                    raise LabError(502, f"{server.name} on {host.name}: {exc}") from exc
            else:
                _take(server, answer.get("services", []))
        server.role = change.get("role", server.role)
        if service is None:
            server.healthy = change.get("healthy", server.healthy)
        elif healthy is not None:
            server.services[service] = healthy
    return server


def _take(server: ServerRecord, services: list[dict[str, Any]]) -> bool:
    """The host's view of the server's services into its record; whether it changed."""
    flags = {s["name"]: bool(s["healthy"]) for s in services if s["name"] in server.services}
    restarts = {s["name"]: int(s["restarts"]) for s in services if s["name"] in server.services}
    restarts = {n: c for n, c in restarts.items() if c}
    changed = flags != {n: server.services[n] for n in flags} or restarts != server.restarts
    server.services.update(flags)
    server.restarts = restarts
    return changed


async def refresh_services(lab: Lab) -> None:
    """Take the hosts' view of every server with named services (one call per host)."""
    wanted = {s.host for s in lab.servers.values() if s.services}
    hosts = [h for h in lab.hosts.values() if h.name in wanted and h.alive]
    views = await asyncio.gather(*(_vms(h) for h in hosts))
    for host, vms in zip(hosts, views, strict=True):
        for vm in vms:
            server = lab.servers.get(vm.get("instance_id", ""))
            if server is not None and server.host == host.name and _take(server, vm["services"]):
                lab.emit_server(server)


async def _vms(host: HostRecord) -> list[dict[str, Any]]:
    try:
        # Short: reading a server must not wait long on a host that hangs.
        return await host.proc.vms(timeout=REFRESH_TIMEOUT)
    except HostCallError:
        return []  # a host going down or hung: its records stay as they were
