"""The policy operations, each carried out once (one attempt): what they ask of the VIM,
the fencing devices and the guest agents. The engine (`haas.engine`) bounds each
attempt in time, retries it and writes the history.

What this block reaches is handed to it (`Reach`): the layers keep `haas` apart from
`recovery`, whose fencing and serving checks the app part passes in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opendoctor.core.faults import Fault
from opendoctor.core.haas import Service
from opendoctor.core.model import HOST_UNREACHABLE, Server
from opendoctor.core.ports import GuestLink, GuestLinkError, NotifyTarget, VimDriver, VimError
from opendoctor.store.haas import HaasStore

log = logging.getLogger(__name__)
POLL = 0.05  # seconds between looks at a restarted service's health


class NotDone(Exception):
    """An operation could not be carried out; the message says why."""


@dataclass(slots=True)
class Reach:
    """What the engine acts through. `fence_host(fault, host)` powers a failed host off
    and confirms it (raises if it cannot); `power_cycle(host)` turns a host off and on
    again through its BMC; `serving(url, timeout)` returns once a server's endpoint
    answers (raises `TimeoutError`); `guestlink()` is the link to the guest agents, or
    None where there is none."""

    vim: VimDriver
    store: HaasStore
    serving: Callable[[str, float], Awaitable[None]]
    notify: NotifyTarget | None = None
    guestlink: Callable[[], GuestLink | None] = lambda: None
    fence_host: Callable[[Fault, str], Awaitable[float]] | None = None
    power_cycle: Callable[[str], Awaitable[None]] | None = None
    on_moved: Callable[[Server], None] | None = None
    # One fence per failed host and fault, whoever of the nodes on it asks first.
    _fences: dict[tuple[str, str], asyncio.Future[float]] = field(default_factory=dict)

    def link(self) -> GuestLink:
        link = self.guestlink()
        if link is None:
            raise NotDone("no guest link: the guest agents cannot be reached (guestlink off)")
        return link

    async def fence(self, fault: Fault, host: str) -> None:
        if self.fence_host is None:
            raise NotDone(f"{host} cannot be fenced here (recovery is off)")
        key = (fault.id, host)
        if key not in self._fences:
            self._fences[key] = asyncio.ensure_future(self.fence_host(fault, host))
            if len(self._fences) > 1000:  # old faults' entries: nobody waits on them now
                del self._fences[next(iter(self._fences))]
        await asyncio.shield(self._fences[key])


async def restart_server(reach: Reach, server: Server, timeout: float) -> Server:
    """Stop (a stopped server is fine), start, and wait for it to serve."""
    try:
        await reach.vim.stop(server.id)
    except VimError as exc:
        if exc.status != 409:
            raise
    await reach.vim.start(server.id)
    await _served(reach, server, timeout)
    return server


async def rebuild_server(reach: Reach, server: Server, timeout: float) -> Server:
    rebuilt = await reach.vim.rebuild(server.id)
    await _served(reach, rebuilt, timeout, server.endpoint)
    return rebuilt


async def move_server(
    reach: Reach,
    fault: Fault,
    server: Server,
    targets: tuple[str, ...],
    host_down: bool,
    timeout: float,
) -> Server:
    """To the first of `targets` that takes it (any host the VIM picks if none are
    given): a cold migration while its host is up, an evacuation once a failed host is
    fenced."""
    if host_down:
        await reach.fence(fault, server.host)
        if fault.type == HOST_UNREACHABLE:
            # A cut link's host is not marked down by the rules; fenced, it may be (the
            # VIM evacuates only from a host it has down).
            await reach.vim.force_down(server.host, True)
    refused: list[str] = []
    for target in targets or (None,):
        try:
            if host_down:
                moved = await reach.vim.evacuate(server.id, target)
            else:
                moved = await reach.vim.migrate(server.id, target)
        except VimError as exc:
            refused.append(f"{target or 'any host'}: {exc}")
            continue
        if reach.on_moved is not None:
            reach.on_moved(moved)
        if moved.status == "SHUTOFF":
            await reach.vim.start(server.id)
        await _served(reach, moved, timeout, server.endpoint)
        return moved
    raise NotDone("no host of the fail-over domain took it: " + "; ".join(refused))


async def _served(
    reach: Reach, server: Server, timeout: float, fallback: str | None = None
) -> None:
    endpoint = server.endpoint or fallback
    if endpoint:
        await reach.serving(endpoint, timeout)


async def restart_services(
    reach: Reach, server_id: str, services: tuple[Service, ...], timeout: float
) -> None:
    """Have the guest agent restart each service, then wait until it reports each one
    healthy again."""
    link = reach.link()
    deadline = time.monotonic() + timeout
    for service in services:
        await link.restart_service(server_id, service.guest_name, timeout)
    for service in services:
        while True:
            health = link.services(server_id).get(service.guest_name)
            if health is not None and health.healthy:
                break
            if time.monotonic() > deadline:
                raise NotDone(f"{service.name} still unhealthy after its restart")
            await asyncio.sleep(POLL)


async def stop_server(reach: Reach, server_id: str) -> None:
    """Fence a server node through the VIM: stopped, so that it serves no more."""
    try:
        await reach.vim.stop(server_id)
    except VimError as exc:
        if exc.status != 409:
            raise


async def announce(reach: Reach, server_id: str, state: str, reason: str) -> None:
    """A role to the server's group peers, best effort: a peer not told still learns it
    from the owner, whom the notification reaches."""
    link = reach.guestlink()
    if link is None:
        return
    try:
        await link.announce(server_id, state, reason)
    except (GuestLinkError, OSError) as exc:
        log.warning("role not announced", extra={"server": server_id, "error": str(exc)})
