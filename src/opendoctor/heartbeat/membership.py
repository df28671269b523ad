"""Who is in which server group, and on which host each member runs: what server-group
messaging routes by.

The groups come from the VIM (`VimDriver.server_groups()`), read at start, again when a
server the service did not know of appears or one leaves (it may have joined or left a
group), and every `refresh_interval` seconds; where each member runs comes from the
service's topology (`where`), which the VIM's change feed keeps up to date. Nothing here
asks the VIM on the path of a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opendoctor.core.model import Server, ServerGroup
from opendoctor.core.ports import VimDriver, VimError

log = logging.getLogger(__name__)

Where = Callable[[str], Server | None]  # a server by id, as the topology last knew it


@dataclass(frozen=True, slots=True)
class Peer:
    """A member of a group as routing sees it: where it runs (None: not known)."""

    id: str
    name: str
    host: str | None


class Membership:
    """The server groups, indexed by member."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self._groups: dict[str, ServerGroup] = {}
        self._of: dict[str, tuple[str, ...]] = {}  # server id -> ids of its groups
        self.loaded = False

    def load(self, groups: Iterable[ServerGroup]) -> None:
        """Replace every group by these (a whole re-read of the VIM's)."""
        by_id = {g.id: g for g in groups}
        of: dict[str, list[str]] = {}
        for group in by_id.values():
            for member in dict.fromkeys(group.members):
                of.setdefault(member, []).append(group.id)
        self._groups = by_id
        self._of = {member: tuple(ids) for member, ids in of.items()}
        self.loaded = True

    def group(self, group_id: str) -> ServerGroup | None:
        return self._groups.get(group_id)

    @property
    def groups(self) -> dict[str, ServerGroup]:
        return dict(self._groups)

    def groups_of(self, server_id: str) -> tuple[str, ...]:
        """The ids of the groups `server_id` is a member of."""
        return self._of.get(server_id, ())

    def is_member(self, server_id: str, group_id: str) -> bool:
        return group_id in self._of.get(server_id, ())

    def knows(self, server_id: str) -> bool:
        return server_id in self._of

    def peers(self, server_id: str, group_id: str) -> list[Peer]:
        """The other members of the group, each with its host."""
        group = self._groups.get(group_id)
        if group is None:
            return []
        return [self.peer(m) for m in dict.fromkeys(group.members) if m != server_id]

    def peer(self, server_id: str) -> Peer:
        server = self.where(server_id)
        if server is None:
            return Peer(server_id, "", None)
        return Peer(server_id, server.name, server.host)

    def by_host(self, peers: Iterable[Peer]) -> dict[str, list[str]]:
        """The peers' ids by the host they run on; peers of no known host are left out
        (nowhere to send to)."""
        out: dict[str, list[str]] = {}
        for peer in peers:
            if peer.host is not None:
                out.setdefault(peer.host, []).append(peer.id)
        return out


class MembershipRefresh:
    """Keeps a `Membership` up to date from the VIM: `run` re-reads it every `interval`
    seconds and whenever `soon()` asked for it (a server came or went); a VIM that does
    not answer keeps the last groups known."""

    def __init__(
        self,
        membership: Membership,
        vim: Callable[[], VimDriver],
        interval: float,
        on_loaded: Callable[[], None] | None = None,
    ) -> None:
        self.membership = membership
        self._vim = vim
        self._interval = interval
        self._on_loaded = on_loaded
        self._wanted = asyncio.Event()
        self.reads = 0
        self.failures = 0

    async def read(self) -> bool:
        """Re-read the groups now; whether the VIM answered."""
        try:
            groups = await self._vim().server_groups()
        except VimError as exc:
            self.failures += 1
            log.warning("server groups not read; keeping the last known", extra={"error": str(exc)})
            return False
        self.membership.load(groups)
        self.reads += 1
        if self._on_loaded is not None:
            self._on_loaded()
        return True

    def soon(self) -> None:
        """Ask for a re-read (several asks before it runs make one)."""
        self._wanted.set()

    async def run(self) -> None:
        """Re-read on demand and every `interval` seconds, for good (cancel to stop)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._interval)
            self._wanted.clear()
            try:
                await self.read()
            except Exception:
                # A driver bug must not end the refresh: the next round tries again.
                log.exception("server groups not read")
