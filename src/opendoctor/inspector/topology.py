"""The inspector's view of the VIM: hosts, servers, and which servers each host holds.

Kept in memory so that a host fault finds its servers in O(servers on that host),
never by asking the VIM on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opendoctor.core.model import Host, Server, VimChange


class Topology:
    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.servers: dict[str, Server] = {}
        self._by_host: dict[str, dict[str, Server]] = {}
        # Hosts out of service for planned maintenance: their going down is expected.
        self.maintenance: set[str] = set()
        # Of those (or those just returned), the ones a monitor reported down and not
        # yet up again: a host is returned only once its monitor hears it again.
        self.maintenance_down: set[str] = set()
        # Told the id of each server put or removed, and each host put, after the change
        # (server-group messaging: what became of a server, its peers hear).
        self.server_watchers: list[Callable[[str], None]] = []
        self.host_watchers: list[Callable[[Host], None]] = []

    def load(self, hosts: Iterable[Host], servers: Iterable[Server]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.servers = {}
        self._by_host = {}
        for server in servers:
            self.put_server(server)

    def put_host(self, host: Host) -> None:
        self.hosts[host.name] = host
        for watch in self.host_watchers:
            watch(host)

    def put_server(self, server: Server) -> None:
        old = self.servers.get(server.id)
        if old is not None and old.host != server.host:
            self._by_host.get(old.host, {}).pop(server.id, None)
        self.servers[server.id] = server
        self._by_host.setdefault(server.host, {})[server.id] = server
        for watch in self.server_watchers:
            watch(server.id)

    def remove_server(self, server_id: str) -> None:
        old = self.servers.pop(server_id, None)
        if old is not None:
            self._by_host.get(old.host, {}).pop(server_id, None)
            for watch in self.server_watchers:
                watch(server_id)

    def remove_host(self, name: str) -> None:
        self.hosts.pop(name, None)

    def apply(self, change: VimChange) -> None:
        if change.kind == "host":
            if change.host is None:
                return
            if change.op == "delete":
                self.remove_host(change.host.name)
            else:
                self.put_host(change.host)
        elif change.kind == "server" and change.server is not None:
            if change.op == "delete":
                self.remove_server(change.server.id)
            else:
                self.put_server(change.server)

    def servers_on(self, host: str) -> list[Server]:
        return list(self._by_host.get(host, {}).values())
