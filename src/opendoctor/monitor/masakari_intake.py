"""Masakari notifications taken in: checked against the segments, deduplicated, recorded,
and turned into what they ask for (`monitor.masakari.decide`).

A fault a notification reports goes in exactly as a Doctor event does: through the
service's `submit` (durable when it returns, and already being handled). A request
refused (400, 409) changes nothing; one whose event could not be accepted leaves no
notification behind either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from opendoctor.core.errors import RequestError
from opendoctor.core.faults import Fault
from opendoctor.core.model import Event, Server
from opendoctor.core.ports import VimDriver, VimError
from opendoctor.core.query import Order
from opendoctor.core.segments import HaNotification
from opendoctor.core.settings import MasakariSettings
from opendoctor.monitor.masakari import decide, opened_fault_id, status_of
from opendoctor.store.ha_notifications import HaNotificationStore
from opendoctor.store.segments import SegmentStore

log = logging.getLogger(__name__)

Submit = Callable[[list[Event]], Awaitable[None]]
FaultLookup = Callable[[str], Awaitable[Fault | None]]


class NotificationIntake:
    def __init__(
        self,
        segments: SegmentStore,
        notes: HaNotificationStore,
        submit: Submit,
        vim: Callable[[], VimDriver],
        fault: FaultLookup,
        servers: Callable[[], Mapping[str, Server]],
        settings: MasakariSettings,
    ) -> None:
        self.segments = segments
        self.notes = notes
        self.submit = submit
        self.vim = vim
        self.fault = fault
        self.servers = servers
        self.settings = settings
        # One notification of a host at a time in this process: its duplicate check and
        # its write go together (as Masakari's lock per host). Each lock with how many
        # hold or wait for it: it goes when the last one is done.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def _host_lock(self, hostname: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(hostname, (asyncio.Lock(), 0))
        self._locks[hostname] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[hostname]
            if users == 1:
                del self._locks[hostname]
            else:
                self._locks[hostname] = (lock, users - 1)

    async def create(
        self,
        type_: str,
        hostname: str,
        generated_time: float,
        payload: dict[str, Any],
        reporter: str,
    ) -> HaNotification:
        """Take a notification in; `RequestError` 400 (host in no segment) or 409 (host
        on maintenance, a duplicate) refuses it."""
        async with self._host_lock(hostname):
            view = await self.segments.segment_of(hostname)
            host = view.host(hostname) if view is not None else None
            if view is None or host is None:
                problem = f"host {hostname!r} is in no failover segment"
                raise RequestError(400, problem, "notification.hostname")
            if host.on_maintenance:
                problem = (
                    f"host {hostname!r} is on maintenance: its {type_} notification is ignored"
                )
                raise RequestError(409, problem, "notification.hostname")
            note = HaNotification(
                type=type_,
                hostname=hostname,
                generated_time=generated_time,
                payload=payload,
                source_host_uuid=host.id,
                failover_segment_uuid=view.segment.id,
                created_at=time.time(),
            )
            await self._refuse_duplicate(note)
            decision = decide(note, reporter, self._known(note))
            if not view.segment.enabled:
                note.status, note.message = "ignored", "the failover segment is disabled"
            elif decision.ignored is not None:
                note.status, note.message = "ignored", decision.ignored
            elif decision.event is not None:
                note.event_id = decision.event.id
            else:
                note.status = "running"
            await self.notes.add(note)
        if note.status == "ignored":
            log.info("masakari notification ignored", extra={"id": note.id, "why": note.message})
        elif decision.event is not None:
            await self._report(note, decision.event)
        elif decision.host_enabled is not None:
            await self._set_enabled(note, decision.host_enabled)
        return note

    def _known(self, note: HaNotification) -> bool:
        instance = note.payload.get("instance_uuid")
        return note.type != "VM" or str(instance) in self.servers()

    async def _refuse_duplicate(self, note: HaNotification) -> None:
        """Masakari's rule: one of the same type, host and payload generated no earlier
        than the window before this one."""
        since = note.generated_time - self.settings.duplicate_window
        for other in await self.notes.alike(note.type, note.hostname, since):
            if other.payload == note.payload:
                problem = (
                    f"a {note.type} notification from {note.hostname!r} with this payload "
                    f"came already ({other.id}): duplicate"
                )
                raise RequestError(409, problem, "notification")

    async def _report(self, note: HaNotification, event: Event) -> None:
        try:
            await self.submit([event])
        except BaseException:
            # Not accepted: the notification goes too (the monitor will send it again).
            with contextlib.suppress(Exception):
                await self.notes.withdraw(note.id)
            raise

    async def _set_enabled(self, note: HaNotification, enabled: bool) -> None:
        what = "enabled" if enabled else "disabled"
        try:
            await self.vim().set_host_enabled(note.hostname, enabled)
        except Exception as exc:  # VimError, or a driver's own: the notification failed
            if not isinstance(exc, VimError):
                log.exception("set_host_enabled failed", extra={"host": note.hostname})
            note.status, note.message = "failed", f"scheduling not {what}: {exc}"
        else:
            note.status, note.message = "finished", f"scheduling on {note.hostname} {what}"
        note.updated_at = await self.notes.set_status(note.id, note.status, note.message)

    # --- reading ---------------------------------------------------------------------------

    async def get(self, note_id: str) -> tuple[HaNotification, Fault | None] | None:
        """The notification, its status brought up to date, and its fault if any."""
        note = await self.notes.get(note_id)
        if note is None:
            return None
        fault = await self._fault_of(note)
        await self._settle(note, fault)
        return note, fault

    async def page(
        self,
        filters: Mapping[str, Any],
        generated_since: float | None,
        order: Order,
        limit: int,
        marker: str | None,
    ) -> list[HaNotification]:
        """A page of notifications, their statuses up to date (`UnknownMarker`)."""
        # Those whose status may have changed are brought up to date first, so that a
        # filter on the status finds them under the one they have now.
        await self.refresh()
        return await self.notes.notifications(filters, generated_since, order, limit, marker)

    async def refresh(self, segment_id: str | None = None) -> list[HaNotification]:
        """Bring the status of the unsettled notifications up to date; returns those
        still unsettled."""
        pending = []
        for note in await self.notes.unsettled(segment_id):
            await self._settle(note, await self._fault_of(note))
            if not note.settled:
                pending.append(note)
        return pending

    async def under_recovery(self, segment_id: str) -> bool:
        """Whether notifications of the segment's hosts are still being handled (the
        segment and its hosts are not to change meanwhile, as in Masakari)."""
        return bool(await self.refresh(segment_id))

    async def _fault_of(self, note: HaNotification) -> Fault | None:
        if note.event_id is None:
            return None
        fault = await self.fault(opened_fault_id(note.event_id))
        if fault is None:
            # The event joined a fault that was open already (another monitor's).
            joined = await self.notes.faults_of_events([note.event_id])
            if note.event_id in joined:
                fault = await self.fault(joined[note.event_id])
        return fault

    async def _settle(self, note: HaNotification, fault: Fault | None) -> None:
        if note.settled:
            return
        # Without an event, only the VIM call it waits for changes it (or its expiry).
        status = note.status if note.event_id is None else status_of(fault)
        message = note.message
        if status in ("new", "running") and time.time() - note.created_at > (
            self.settings.expire_after
        ):
            status, message = "failed", "expired (masakari.expire_after) before it ended"
        if status != note.status:
            note.status, note.message = status, message
            note.updated_at = await self.notes.set_status(note.id, status, message)
