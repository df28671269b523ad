"""An in-memory VIM for unit tests: the same `VimDriver` contract, no processes.

Integration tests use the lab driver against real processes; this one keeps API and
pipeline unit tests fast and lets them make the VIM fail on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from opendoctor.controller.batches import reset_each
from opendoctor.core.model import Host, Server, ServerGroup, VimChange
from opendoctor.core.ports import VimError


class MemoryVim:
    def __init__(self, hosts: list[Host], servers: list[Server]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.servers = {s.id: s for s in servers}
        self.calls: list[tuple[str, ...]] = []
        self.fail: set[str] = set()  # operation names that raise VimError
        self.groups: dict[str, ServerGroup] = {}
        self._feed: list[asyncio.Queue[VimChange]] = []

    def _check(self, op: str, *args: str) -> None:
        self.calls.append((op, *args))
        if op in self.fail:
            raise VimError(f"{op} failed (on purpose)", 500)

    def _host(self, name: str) -> Host:
        if name not in self.hosts:
            raise VimError(f"no host {name}", 404)
        return self.hosts[name]

    def _server(self, server_id: str) -> Server:
        if server_id not in self.servers:
            raise VimError(f"no server {server_id}", 404)
        return self.servers[server_id]

    def _publish(self, change: VimChange) -> None:
        for queue in self._feed:
            queue.put_nowait(change)

    def _changed_host(self, host: Host) -> None:
        self._publish(VimChange("host", "upsert", host=replace(host)))

    def _changed_server(self, server: Server) -> None:
        self._publish(VimChange("server", "upsert", server=replace(server)))

    def delete_server(self, server_id: str) -> None:
        """An owner deletes its server (a scale-in): gone, and the feed says so."""
        server = self.servers.pop(server_id)
        self._publish(VimChange("server", "delete", server=replace(server)))

    async def list_hosts(self) -> list[Host]:
        self._check("list_hosts")
        return [replace(h) for h in self.hosts.values()]

    async def list_servers(self) -> list[Server]:
        self._check("list_servers")
        return [replace(s) for s in self.servers.values()]

    async def force_down(self, host: str, down: bool) -> None:
        self._check("force_down", host, str(down))
        h = self._host(host)
        h.forced_down, h.state = down, "down" if down else "up"
        self._changed_host(h)

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        self._check("set_host_enabled", host, str(enabled))
        h = self._host(host)
        h.enabled = enabled
        self._changed_host(h)

    async def reset_state(self, server_id: str, state: str) -> None:
        self._check("reset_state", server_id, state)
        s = self._server(server_id)
        s.status = state.upper()
        self._changed_server(s)

    async def reset_states(self, server_ids: Sequence[str], state: str) -> dict[str, str]:
        return await reset_each(self.reset_state, server_ids, state)

    async def stop(self, server_id: str) -> None:
        self._check("stop", server_id)
        s = self._server(server_id)
        s.status = "SHUTOFF"
        self._changed_server(s)

    async def start(self, server_id: str) -> None:
        self._check("start", server_id)
        s = self._server(server_id)
        s.status = "ACTIVE"
        self._changed_server(s)

    def _room(self, host: Host, server: Server) -> bool:
        on = [s for s in self.servers.values() if s.host == host.name and s.id != server.id]
        cpu_ok = not host.vcpus or sum(s.vcpus for s in on) + server.vcpus <= host.vcpus
        return cpu_ok and (
            not host.ram_mb or sum(s.ram_mb for s in on) + server.ram_mb <= host.ram_mb
        )

    def _target(self, server: Server, target: str | None) -> str:
        """The host asked for, as an admin forcing it (tests put servers anywhere); else
        as a VIM's scheduler: a host that is up, enabled and has room."""
        if target is not None:
            self._host(target)
            return target
        candidates = [
            h.name
            for h in self.hosts.values()
            if h.name != server.host and not h.forced_down and h.enabled and self._room(h, server)
        ]
        if not candidates:
            raise VimError("no host to move the server to", 409)
        return min(candidates, key=lambda n: sum(s.host == n for s in self.servers.values()))

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        self._check("migrate", server_id)
        s = self._server(server_id)
        s.host = self._target(s, target_host)
        self._changed_server(s)
        return replace(s)

    async def live_migrate(self, server_id: str, target_host: str | None = None) -> Server:
        self._check("live_migrate", server_id, target_host or "")
        s = self._server(server_id)
        if s.status != "ACTIVE":
            raise VimError(f"cannot live-migrate a server in status {s.status}", 409)
        s.host = self._target(s, target_host)
        self._changed_server(s)
        return replace(s)

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        self._check("evacuate", server_id, target_host or "")
        s = self._server(server_id)
        if not self._host(s.host).forced_down:
            raise VimError(f"host {s.host} is still up", 409)
        s.host = self._target(s, target_host)
        s.status = "ACTIVE"
        self._changed_server(s)
        return replace(s)

    async def rebuild(self, server_id: str) -> Server:
        self._check("rebuild", server_id)
        s = self._server(server_id)
        if self._host(s.host).forced_down:
            raise VimError(f"host {s.host} is down: evacuate the server instead", 409)
        s.status = "ACTIVE"
        self._changed_server(s)
        return replace(s)

    async def server_groups(self) -> list[ServerGroup]:
        self._check("server_groups")
        return list(self.groups.values())

    async def changes(self) -> AsyncIterator[VimChange]:
        queue: asyncio.Queue[VimChange] = asyncio.Queue()
        self._feed.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._feed.remove(queue)

    async def close(self) -> None:
        return None
