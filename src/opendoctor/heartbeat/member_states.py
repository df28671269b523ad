"""What became of each member of a server group, as its peers are told (peer states).

Three sources, each saying only what it knows:

- the hosts (`instance-state`): a VM's process started, stopped cleanly, or exited or
  stopped answering its heartbeat (`failed`); a host speaks only for its own VMs;
- the VIM's changes of servers: a status that becomes SHUTOFF (`stopped`) or ACTIVE
  (`started`), a server on another host (`migrated`), a server deleted (`stopped`);
- hosts at fault: a host the VIM has down (the inspector marks a host at fault down at
  once; Nova's own view counts too) has its VMs `unreachable` until the host is fenced,
  and `failed` only then. A host that is not heard may still run its VMs: a standby
  told "failed" before the fence would take over from an active that still runs (a
  split brain). A host up again before it was fenced brings its VMs back as `started`.

Each change is handed to `tell` once (a state repeated is not sent again); `state_of`
answers status requests from the same view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opendoctor.core.model import Host, Server

log = logging.getLogger(__name__)

STARTED, STOPPED, FAILED, MIGRATED, UNREACHABLE = (
    "started",
    "stopped",
    "failed",
    "migrated",
    "unreachable",
)

# (server id, state, reason, host it is on now or None, whether the server itself is
# told too)
Tell = Callable[[str, str, str | None, str | None, bool], None]


@dataclass(frozen=True, slots=True)
class _Seen:
    status: str
    host: str
    name: str


def _from_status(status: str) -> str:
    if status == "ACTIVE":
        return STARTED
    if status in ("SHUTOFF", "STOPPED", "DELETED"):
        return STOPPED
    return status.lower()


class MemberStates:
    def __init__(
        self,
        where: Callable[[str], Server | None],
        servers_on: Callable[[str], Iterable[Server]],
        tell: Tell,
        is_member: Callable[[str], bool],
    ) -> None:
        self._where = where
        self._servers_on = servers_on
        self._tell = tell
        self._is_member = is_member
        self._state: dict[str, tuple[str, str | None]] = {}  # server -> (state, reason)
        self._seen: dict[str, _Seen] = {}  # each server's status and host, last seen
        # Hosts at fault: False while not fenced, True once fenced.
        self._faulted: dict[str, bool] = {}

    # --- what is asked --------------------------------------------------------------------

    def state_of(self, server_id: str) -> str:
        """The server's state as its peers know it (or would, had a change been sent)."""
        known = self._state.get(server_id)
        if known is not None:
            return known[0]
        server = self._where(server_id)
        if server is None:
            return STOPPED
        fenced = self._faulted.get(server.host)
        if fenced is not None:
            return FAILED if fenced else UNREACHABLE
        return _from_status(server.status)

    def name_of(self, server_id: str) -> str:
        """The server's name, as last seen (it may be gone from the topology now)."""
        seen = self._seen.get(server_id)
        return "" if seen is None else seen.name

    def faulted(self, host: str) -> bool:
        return host in self._faulted

    # --- the hosts ------------------------------------------------------------------------

    def instance_state(self, server_id: str, state: str, reason: str | None) -> None:
        """What the server's own host says of it (the caller checked it is its host)."""
        server = self._where(server_id)
        self._set(server_id, state, reason, server.host if server else None)

    def announce(self, server_id: str, state: str, reason: str | None) -> None:
        """A state the service decided (a role: active, standby). The server itself is
        told too: it is news to it (a standby made active must take over), where what
        happened to a server (it failed, it moved) is news to its peers only."""
        server = self._where(server_id)
        host = server.host if server else None
        self._set(server_id, state, reason, host, again=True, itself=True)

    # --- the VIM --------------------------------------------------------------------------

    def server_changed(self, server_id: str) -> bool:
        """The topology has a new picture of the server (or none: deleted). Returns
        whether the server is new or gone (its groups may have changed)."""
        server = self._where(server_id)
        before = self._seen.get(server_id)
        if server is None:
            if before is not None and self._is_member(server_id):
                self._set(server_id, STOPPED, "deleted", None)
            self._seen.pop(server_id, None)
            self._state.pop(server_id, None)
            return before is not None
        self._seen[server_id] = _Seen(server.status, server.host, server.name)
        if before is None or not self._is_member(server_id):
            return before is None
        if server.host != before.host:
            self._set(server_id, MIGRATED, f"from {before.host}", server.host, again=True)
        if server.status == before.status or server.host in self._faulted:
            # A host at fault has its servers marked down (ERROR) before it is fenced:
            # that says nothing of whether they run.
            return False
        if server.status == "ACTIVE":
            self._set(server_id, STARTED, None, server.host)
        elif server.status in ("SHUTOFF", "STOPPED"):
            self._set(server_id, STOPPED, None, server.host)
        return False

    def seen_all(self, servers: Iterable[Server]) -> None:
        """Take the servers as they are now, without telling anyone (a start)."""
        for server in servers:
            self._seen[server.id] = _Seen(server.status, server.host, server.name)

    # --- hosts at fault --------------------------------------------------------------------

    def host_changed(self, host: Host) -> None:
        """The topology has a new picture of the host: down (or forced down) is a host at
        fault; up again, one that came back."""
        if host.forced_down or host.state == "down":
            self.host_fault(host.name)
        else:
            self.host_cleared(host.name)

    def hosts_seen(self, hosts: Iterable[Host]) -> None:
        """Take the hosts down now as at fault, without telling anyone (a start)."""
        for host in hosts:
            if host.forced_down or host.state == "down":
                self._faulted.setdefault(host.name, False)

    def host_fault(self, host: str) -> None:
        if host in self._faulted:
            return
        self._faulted[host] = False
        for server in self._members_on(host):
            self._set(server.id, UNREACHABLE, f"host {host} is down, not yet fenced", host)

    def host_fenced(self, host: str) -> None:
        """The host is confirmed off: its VMs run no more, anywhere."""
        self._faulted[host] = True
        for server in self._members_on(host):
            self._set(server.id, FAILED, f"host {host} fenced", host)

    def host_cleared(self, host: str) -> None:
        fenced = self._faulted.pop(host, None)
        if fenced is None or fenced:
            # Fenced: its VMs were failed, and what comes of them (moved, restarted) the
            # VIM's changes say.
            return
        for server in self._members_on(host):
            if self._state.get(server.id, (None,))[0] == UNREACHABLE:
                self._set(server.id, STARTED, f"host {host} heard again", host)

    def _members_on(self, host: str) -> list[Server]:
        return [s for s in self._servers_on(host) if self._is_member(s.id)]

    def _set(
        self,
        server_id: str,
        state: str,
        reason: str | None,
        host: str | None,
        again: bool = False,
        itself: bool = False,
    ) -> None:
        if not again and self._state.get(server_id, (None,))[0] == state:
            return
        self._state[server_id] = (state, reason)
        self._tell(server_id, state, reason, host, itself)
