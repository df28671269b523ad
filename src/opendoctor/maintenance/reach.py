"""What a maintenance session reaches: the VIM, the service's view of it, the owners
(through their alarms), the hosts' maintainers and the marks the inspector reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from opendoctor.core.maintenance import Session
from opendoctor.core.maintenance_settings import MaintenanceSettings
from opendoctor.core.model import Host, Server
from opendoctor.core.ports import HostMaintainer, NotifyTarget, VimDriver
from opendoctor.infra.live import Publish, nowhere
from opendoctor.store.maintenance import MaintenanceStore


class Stop(Exception):
    """The session cannot go on: it fails with this reason (or is cancelled)."""


@dataclass(slots=True)
class Reach:
    store: MaintenanceStore
    settings: MaintenanceSettings
    vim: Callable[[], VimDriver]
    hosts: Callable[[], Mapping[str, Host]]
    servers_on: Callable[[str], list[Server]]
    notify: NotifyTarget
    maintainers: Mapping[str, HostMaintainer]
    # Tell the inspector and the graph a host is (or no longer is) in maintenance: its
    # going down is expected, and raises no fault for its (already moved) owners.
    mark: Callable[[str, bool], None]
    # Hosts with an active fault now (a session holds between hosts while there are).
    faulted_hosts: Callable[[], set[str]]
    base_url: str
    # Whether the monitors hear the host again (no down reported while it was out that
    # has not had its up); and how long they take to notice a host that went off.
    heard: Callable[[str], bool] = lambda host: True
    settle: float = 0.0
    # Other processes serve the API (scaled out): owners' answers and admins' changes
    # reach a running session through the store, and are taken up from it.
    shared: bool = False
    # Each saved step of a session, as it happens (the dashboard's live stream).
    publish: Publish = nowhere


class Saver:
    """Writes of one session, one at a time: the engine's steps and the API's changes
    interleave, and two writes in flight at once may land in either order (the older
    record last)."""

    def __init__(self, store: MaintenanceStore, publish: Publish = nowhere) -> None:
        self.store = store
        self.publish = publish
        self._locks: dict[str, asyncio.Lock] = {}

    async def save(self, session: Session) -> None:
        lock = self._locks.setdefault(session.session_id, asyncio.Lock())
        async with lock:
            await self.store.save(session)
        # After the write: a page that reads the session on this news finds it so. A
        # session is the admins' (it is about hosts), so of no project.
        progress = {
            "session_id": session.session_id,
            "state": session.state,
            "percent_done": session.percent_done(),
            "current_host": session.current_host,
            "waiting": session.waiting,
        }
        self.publish("maintenance.session", progress, None)

    def forget(self, session_id: str) -> None:
        self._locks.pop(session_id, None)


class Waker:
    """One event per running session: an owner's answer or an admin's action wakes it
    at once; otherwise it looks again every `step_interval`."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, session_id: str) -> asyncio.Event:
        return self._events.setdefault(session_id, asyncio.Event())

    def wake(self, session_id: str) -> None:
        event = self._events.get(session_id)
        if event is not None:
            event.set()

    def forget(self, session_id: str) -> None:
        self._events.pop(session_id, None)


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    deadline: float,
    event: asyncio.Event,
    interval: float,
) -> bool:
    """Until `check()` holds (True) or the wall-clock `deadline` passes (False); woken
    early by `event`."""
    while True:
        # Cleared before the check: a wake-up during it is not lost.
        event.clear()
        if await check():
            return True
        left = deadline - time.time()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(left, interval))
