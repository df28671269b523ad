"""Keeps the entity graph in step with the VIM: hosts, servers, and where each runs.

Fed from the same places as the inspector's topology (the VIM's snapshot at start, its
change feed after), on the change-feed path, never on the fault hot path.
"""

from __future__ import annotations

from collections.abc import Iterable

from opendoctor.core.model import Host, Server, VimChange
from opendoctor.inspector.graph.model import CONTAINS, TopologyGraph, make_key
from opendoctor.inspector.graph.states import Category

RESOURCE = Category.RESOURCE.value


class GraphFeed:
    def __init__(self, graph: TopologyGraph) -> None:
        self.graph = graph
        self._host_of: dict[str, str] = {}  # server id -> host name it is linked under
        self._known: set[str] = set()  # vertices that came from the VIM
        self._hosts: dict[str, Host] = {}
        # Hosts in planned maintenance show so, whatever their power (DESIGN §4 states).
        self.maintenance: set[str] = set()

    def load(self, hosts: Iterable[Host], servers: Iterable[Server]) -> int:
        """Take a full snapshot; what the VIM no longer has is removed (returns how many).

        Only vertices this feed made are candidates: what a topology file or a monitor
        added is not the VIM's to remove.
        """
        before = self._known
        self._known = set()
        for host in hosts:
            self.host(host)
        for server in servers:
            self.server(server)
        stale = before - self._known
        for key in stale:
            self.graph.remove(key)
            if key.startswith("server:"):
                self._host_of.pop(key.removeprefix("server:"), None)
            elif key.startswith("host:"):
                self._hosts.pop(key.removeprefix("host:"), None)
        return len(stale)

    def owns(self, key: str) -> bool:
        """Whether the vertex came from the VIM (and is the VIM's to remove)."""
        return key in self._known

    def set_maintenance(self, name: str, on: bool) -> None:
        if on:
            self.maintenance.add(name)
        else:
            self.maintenance.discard(name)
        host = self._hosts.get(name)
        if host is not None:
            self.host(host)

    def host(self, host: Host) -> None:
        self._hosts[host.name] = host
        state = "down" if host.forced_down or host.state == "down" else "up"
        if host.name in self.maintenance:
            state = "maintenance"
        self._known.add(make_key("host", host.name))
        self.graph.upsert(
            RESOURCE,
            "host",
            host.name,
            name=host.name,
            raw_state=state,
            props={"address": host.address, "enabled": host.enabled},
        )

    def server(self, server: Server) -> None:
        self._known.add(make_key("server", server.id))
        self.graph.upsert(
            RESOURCE,
            "server",
            server.id,
            name=server.name,
            project=server.project_id,
            raw_state=server.status,
        )
        key = make_key("server", server.id)
        old = self._host_of.get(server.id)
        if old != server.host:
            if old is not None:
                self.graph.unlink(make_key("host", old), key, CONTAINS)
            self.graph.link(make_key("host", server.host), key, CONTAINS)
            self._host_of[server.id] = server.host

    def apply(self, change: VimChange) -> None:
        if change.host is not None:
            if change.op == "delete":
                self.graph.remove(make_key("host", change.host.name))
                self._known.discard(make_key("host", change.host.name))
                self._hosts.pop(change.host.name, None)
            else:
                self.host(change.host)
        elif change.server is not None:
            if change.op == "delete":
                self.graph.remove(make_key("server", change.server.id))
                self._host_of.pop(change.server.id, None)
                self._known.discard(make_key("server", change.server.id))
            else:
                self.server(change.server)
