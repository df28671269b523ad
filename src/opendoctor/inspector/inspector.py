"""The inspector: from a host fault to its affected servers, and what happens to them.

On a new fault it finds the host's servers in the in-memory topology and starts three
things together — notify the owners, force the host down, set the servers to error —
so the owners never wait on the VIM (the Doctor "shortcut" path). Recovery follows
once the owners are told and the host is marked down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from opendoctor import metrics
from opendoctor.config import InspectorSettings
from opendoctor.controller.base import VimDriver, VimError
from opendoctor.faults import Fault
from opendoctor.inspector.fault_graph import FaultGraph
from opendoctor.inspector.topology import Topology
from opendoctor.model import INSTANCE_UPDATE, Event, NotificationEvent, Server, new_id
from opendoctor.notifier.notifier import Notifier
from opendoctor.store.pipeline import EventStore, FaultStore

log = logging.getLogger(__name__)

Recover = Callable[[Fault, list[Server]], Awaitable[None]]


def instance_event(event: Event, fault: Fault, server: Server) -> NotificationEvent:
    note = NotificationEvent.build(
        INSTANCE_UPDATE,
        fault_id=fault.id,
        instance_id=server.id,
        state="error",
        host=server.host,
        project_id=server.project_id,
        tenant_id=server.project_id,
    )
    # Stable per (event, server): a replayed event yields the same message ids.
    note.message_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{event.id}/{server.id}"))
    return note


class Inspector:
    def __init__(
        self,
        topology: Topology,
        vim: VimDriver,
        notifier: Notifier,
        events: EventStore,
        faults: FaultStore,
        settings: InspectorSettings,
        recover: Recover | None = None,
        fault_graph: FaultGraph | None = None,
    ) -> None:
        self.topology = topology
        self.vim = vim
        self.notifier = notifier
        self.events = events
        self.faults = faults
        self.settings = settings
        self.recover = recover
        self.fault_graph = fault_graph
        self.active: dict[tuple[str, str], Fault] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Waiters for tests and the demo: fault id -> event set when its work is done.
        self.done: dict[str, asyncio.Event] = {}

    async def restore(self) -> None:
        """Take up the faults that were active when the service stopped."""
        for fault in await self.faults.list(status="active", limit=100_000):
            self.active[fault.key] = fault
        metrics.FAULTS_ACTIVE.set(len(self.active))

    async def handle(self, event: Event) -> None:
        """Bus handler for accepted events (called in order per host)."""
        fault = self.active.get(event.key)
        if event.active:
            if fault is not None:
                # Another report of a known fault: remember what says so, act once.
                fault.repeats += 1
                metrics.EVENTS.labels(event.type, "duplicate").inc()
                if event.type not in fault.signals:
                    fault.signals.append(event.type)
                    await self.faults.save(fault)
                await self.events.mark_processed(event, fault.id)
                return
            if event.instance_id is not None:
                await self._new_server_fault(event)
            else:
                await self._new_host_fault(event)
        elif fault is not None:
            if event.type in fault.signals:
                fault.signals.remove(event.type)
            if fault.signals:
                # Still down by another signal (say, the process is back, the guest silent).
                await self.faults.save(fault)
                await self.events.mark_processed(event, fault.id)
            else:
                await self._clear(event, fault)
        else:
            await self.events.mark_processed(event, None)

    def _open(self, event: Event) -> Fault:
        detected = event.trace.get("T01", event.time)
        fault = Fault(
            id=new_id(),
            type=event.type,
            hostname=event.hostname,
            started=detected,
            instance_id=event.instance_id,
            signals=[event.type],
        )
        for name, at in event.trace.items():
            fault.mark(name, at)
        fault.mark("T01", detected)
        self.active[event.key] = fault
        self.done[fault.id] = asyncio.Event()
        metrics.FAULTS_ACTIVE.set(len(self.active))
        return fault

    async def _new_server_fault(self, event: Event) -> None:
        """One server failed (its process exited, its guest went silent or unhealthy)."""
        fault = self._open(event)
        server = self.topology.servers.get(event.instance_id or "")
        if server is not None:
            fault.affected = [server.id]
            self._mark(fault, "T02")
            root_cause = {
                "fault_id": fault.id,
                "event_type": event.type,
                "hostname": event.hostname,
                "instance_id": server.id,
                "reason": event.details.get("reason"),
            }
            note = instance_event(event, fault, server)
            await self._notify_then_mark(fault, [note], root_cause, [server])
            if self.fault_graph is not None:
                self.fault_graph.raised(fault, [server])
        else:
            log.warning("fault of an unknown server", extra={"instance_id": event.instance_id})
        await self.faults.save(fault)
        await self.events.mark_processed(event, fault.id)
        self.done[fault.id].set()

    async def _new_host_fault(self, event: Event) -> None:
        fault = self._open(event)
        servers = self.topology.servers_on(event.hostname)
        fault.affected = [s.id for s in servers]
        self._mark(fault, "T02")
        notes = [instance_event(event, fault, s) for s in servers]
        root_cause = {"fault_id": fault.id, "event_type": event.type, "hostname": event.hostname}
        await asyncio.gather(
            self._notify_then_mark(fault, notes, root_cause, servers),
            self._force_down(fault),
        )
        # After the owners are told: the graph is for people asking why, later.
        if self.fault_graph is not None:
            self.fault_graph.raised(fault, servers)
        await self.faults.save(fault)
        await self.events.mark_processed(event, fault.id)
        if self.recover is not None and "T04" in fault.trace and servers:
            self._spawn(self._recover(fault, servers))
        else:
            self.done[fault.id].set()

    def _mark(self, fault: Fault, checkpoint: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        fault.mark(checkpoint, at)
        metrics.STAGE.labels(checkpoint).observe(max(0.0, at - fault.trace["T01"]))

    async def _notify(self, fault: Fault, notes: list[NotificationEvent], cause: object) -> None:
        entries = await self.notifier.notify(notes, root_cause=cause)
        delivered = [e.delivered for e in entries if e.delivered is not None]
        if delivered:
            self._mark(fault, "T09", max(delivered))

    async def _notify_then_mark(
        self, fault: Fault, notes: list[NotificationEvent], cause: object, servers: list[Server]
    ) -> None:
        # One VIM call per server costs this process as much CPU as one notification.
        # Run side by side they share the CPU and the owners hear later; the owners come
        # first (they may switch to a standby before the VIM moves anything), so the
        # per-server calls start once every notification has had its first attempt.
        # Forcing the host down is one call and starts at once, with the notifications.
        await self._notify(fault, notes, cause)
        await self._set_error(fault, servers)

    async def _force_down(self, fault: Fault) -> None:
        try:
            await self.vim.force_down(fault.hostname, True)
        except VimError as exc:
            metrics.VIM_ERRORS.labels("force_down").inc()
            log.error("could not mark host down", extra={"host": fault.hostname, "error": str(exc)})
            return
        host = self.topology.hosts.get(fault.hostname)
        if host is not None:
            host.forced_down, host.state = True, "down"
        self._mark(fault, "T04")

    async def _set_error(self, fault: Fault, servers: list[Server]) -> None:
        limit = asyncio.Semaphore(self.settings.vim_concurrency)

        async def one(server: Server) -> bool:
            async with limit:
                try:
                    await self.vim.reset_state(server.id, "error")
                except VimError as exc:
                    metrics.VIM_ERRORS.labels("reset_state").inc()
                    log.error(
                        "could not set server to error",
                        extra={"server": server.id, "error": str(exc)},
                    )
                    return False
            server.status = "ERROR"
            return True

        results = await asyncio.gather(*(one(s) for s in servers))
        if all(results):
            self._mark(fault, "T03")

    async def _recover(self, fault: Fault, servers: list[Server]) -> None:
        assert self.recover is not None
        try:
            await self.recover(fault, servers)
            if fault.recovery and all(i.result == "ok" for i in fault.recovery):
                finished = [i.finished for i in fault.recovery if i.finished is not None]
                self._mark(fault, "T11", max(finished))
            await self.faults.save(fault)
        finally:
            self.done[fault.id].set()

    async def _clear(self, event: Event, fault: Fault) -> None:
        fault.status = "cleared"
        fault.cleared = time.time()
        if self.fault_graph is not None:
            self.fault_graph.cleared(fault)
        del self.active[event.key]
        self.done.pop(fault.id, None)
        metrics.FAULTS_ACTIVE.set(len(self.active))
        try:
            if fault.instance_id is not None:
                await self._server_back(fault.instance_id)
            else:
                await self._host_back(event.hostname)
        except VimError as exc:
            metrics.VIM_ERRORS.labels("clear").inc()
            problem = {"fault": fault.id, "error": str(exc)}
            log.error("could not mark the resource up", extra=problem)
        await self.faults.save(fault)
        await self.events.mark_processed(event, fault.id)

    async def _host_back(self, hostname: str) -> None:
        await self.vim.force_down(hostname, False)
        host = self.topology.hosts.get(hostname)
        if host is not None:
            host.forced_down, host.state = False, "up"

    async def _server_back(self, server_id: str) -> None:
        server = self.topology.servers.get(server_id)
        # Only undo what the fault did: a server someone else changed meanwhile stays.
        if server is not None and server.status == "ERROR":
            await self.vim.reset_state(server_id, "active")
            server.status = "ACTIVE"

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
