"""The inspector: from a fault to what it hurts, through the rule templates, and action.

A new fault becomes an alarm in the entity graph; the rule engine brings its matches up
to date (for a host: every server on it is down, the host must be marked down) and
hands back a plan, which `Effects` carries out owners first. A second signal about a
resource already at fault is recorded once, unless it is graver (a host that was only
unreachable is now down): then the alarm is raised to the new severity and the
templates take it from there. Recovery follows once the owners are told and the host
is marked down. A resource that comes back is held down a while before its fault
clears (`damping`): one that flaps keeps one fault.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opendoctor.core.faults import Fault
from opendoctor.core.model import HOST_UNREACHABLE, Event, Server
from opendoctor.core.ports import NotifyTarget, VimDriver, VimError
from opendoctor.core.settings import InspectorSettings
from opendoctor.infra import metrics
from opendoctor.infra.live import Hub
from opendoctor.infra.tasks import Background, keep_trying
from opendoctor.inspector.damping import Damping
from opendoctor.inspector.effects import Effects, LoggingWorkflows, Outcome, WorkflowRunner
from opendoctor.inspector.fault_graph import FaultGraph, gravity, resource_of
from opendoctor.inspector.templates import Engine
from opendoctor.inspector.topology import Topology
from opendoctor.store.pipeline import EventStore, FaultStore

log = logging.getLogger(__name__)

# Recovery of a fault's servers; the awaitable ends once the VIM has every mark the fault
# asked for (servers in error): nothing may move before, or a late mark would undo it.
Recover = Callable[[Fault, list[Server], Awaitable[None]], Awaitable[None]]
# Recovery of the one server a server's fault is about (restart in place, then move).
RecoverServer = Callable[[Fault, Server], Awaitable[None]]
# How long a fault cleared here is remembered as such: longer than the store can lag
# behind (a save retried in the background).
CLEARED_MEMORY = 600.0
UNMARK_MOST = 30.0  # seconds between asks at most, while the VIM refuses to lift a mark


@dataclass(slots=True)
class _Batch:
    """What the store said of a batch's events before it was handled, and its marks."""

    done: set[str]  # events handled before (a batch delivered again)
    stored: dict[tuple[str, str | None], str]  # active faults' ids, by (hostname, instance)
    known: set[tuple[str, str | None]] = field(default_factory=set)  # reconciled since
    marks: list[asyncio.Future[None]] = field(default_factory=list)


class Inspector:
    def __init__(
        self,
        topology: Topology,
        vim: VimDriver,
        notifier: NotifyTarget,
        events: EventStore,
        faults: FaultStore,
        settings: InspectorSettings,
        engine: Engine,
        fault_graph: FaultGraph,
        recover: Recover | None = None,
        workflows: WorkflowRunner | None = None,
        dedupe: bool = False,
        recover_server: RecoverServer | None = None,
        live: Hub | None = None,
    ) -> None:
        self.topology = topology
        self.vim = vim
        self.events = events
        self.faults = faults
        self.engine = engine
        self.fault_graph = fault_graph
        self.recover = recover
        self.recover_server = recover_server
        # Faults opened, changed and cleared, as they happen (the dashboard's stream).
        self.live = live if live is not None else Hub()
        # A bus that delivers at least once (RabbitMQ) may hand over an event again, to
        # this process or, after a takeover, to another: the store says if it was done.
        self.dedupe = dedupe
        self.effects = Effects(
            topology,
            engine.graph,
            vim,
            notifier,
            settings,
            workflows or LoggingWorkflows(),
            self._mark,
        )
        self.active: dict[tuple[str, str], Fault] = {}
        self.damping = Damping(settings.hold_down, settings.hold_down_max)
        self._unsaved: set[str] = set()  # faults whose store is being retried
        # Each fault's save under way (gone once none is): see `_store`.
        self._saving: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Each active fault's VIM calls (host down, servers in error), maybe still running.
        self._vim_work: dict[str, list[asyncio.Future[None]]] = {}
        self._background = Background()
        # Waiters for tests and the demo: fault id -> event set when its work is done.
        self.done: dict[str, asyncio.Event] = {}
        # Faults cleared here, by id, and when (oldest first, kept CLEARED_MEMORY
        # seconds): the store may say "active" a moment longer, and the mirror must not
        # bring them back as another's.
        self.cleared_here: OrderedDict[str, float] = OrderedDict()

    async def restore(self) -> None:
        """Take up the faults that were active when the service stopped."""
        for fault in await self.faults.list(status="active", limit=100_000):
            self.active[fault.key] = fault

    def raise_restored(self) -> None:
        """Put restored faults back into the graph (before the engine attaches: what the
        rules decide from them was carried out before the restart)."""
        for fault in self.active.values():
            self.fault_graph.raised(fault)
            if fault.held_until is not None:
                # Held when the service stopped: the hold-down runs out as it would have.
                delay = max(0.0, fault.held_until - time.time())
                self._hold(fault, delay, f"{fault.id}/held", {})
        metrics.FAULTS_ACTIVE.set(len(self.active))

    async def handle(self, event: Event) -> None:
        """Bus handler for accepted events (called in order per host)."""
        await self.handle_many([event])

    async def handle_many(self, events: Sequence[Event]) -> None:
        """Bus handler for a batch of one partition's events, in order. Where the store
        is asked whether each was handled before (`dedupe`), it is asked once for the
        whole batch (both questions at once: one round trip), and the batch's marks go
        to it together at its end: one commit for a hundred events, not one each."""
        if not self.dedupe:
            for event in events:
                await self._handle(event, None)
            return
        done, stored = await asyncio.gather(
            self.events.processed_among([e.id for e in events]),
            self.faults.active_ids_among({(e.hostname, e.instance_id) for e in events}),
        )
        batch = _Batch(done, stored)
        try:
            for event in events:
                await self._handle(event, batch)
        finally:
            # Marked before the bus acks the batch (and `drain` returns).
            await asyncio.gather(*batch.marks)

    async def _handle(self, event: Event, batch: _Batch | None) -> None:
        """Handle one event; `batch`: what the store said of it (None: no `dedupe`)."""
        fault = self.active.get(event.key)
        if batch is not None:
            pair = (event.hostname, event.instance_id)
            done, stored = event.id in batch.done, batch.stored.get(pair)
            # Brought up to date with the store by an earlier event of the batch: what
            # the store said before the batch is older than what is known here.
            known = pair in batch.known
            if done:
                metrics.event_outcome(event.type, "redelivered").inc()
                log.info("event already handled", extra={"event": event.id})
                return
            # The fault is asked for even when one is known here: partitions move between
            # replicas (a crash, a hand-back), and what another replica did meanwhile
            # (cleared this one, opened another) is only in the store. A fault whose save
            # is still being retried is not in the store yet: its absence there says
            # nothing about another replica.
            if (
                not known
                and fault is not None
                and (
                    (stored is None and fault.id not in self._unsaved)
                    or (stored is not None and stored != fault.id)
                )
            ):
                self._forget(fault)
                self.engine.run(keep_deferred=True)
                fault = None
            if not known and stored is not None and fault is None:
                # Whole, now: cleared meanwhile by its replica, it is left to it.
                opened = await self.faults.get_active(stored)
                if opened is not None:
                    fault = self._adopt(event, opened)
            batch.known.add(pair)
        if fault is None and event.instance_id is None:
            if event.active and event.hostname in self.topology.maintenance:
                # Planned: its servers were moved off before it went down; nobody is told.
                self.topology.maintenance_down.add(event.hostname)
                metrics.event_outcome(event.type, "in_maintenance").inc()
                where = {"event": event.id, "host": event.hostname}
                log.info("host in maintenance: no fault", extra=where)
                await self._processed(event, None, batch)
                return
            if not event.active:
                self.topology.maintenance_down.discard(event.hostname)
        if self.damping.holding(event.key):
            await self.damping.settle(event.key, event.active)
            fault = self.active.get(event.key)  # gone if its clearance was under way
        if event.active:
            if fault is not None:
                await self._again(event, fault, batch)
            else:
                await self._new_fault(event, batch)
        elif fault is not None:
            if event.type in fault.signals:
                fault.signals.remove(event.type)
            if fault.signals or self.damping.holding(fault.key):
                # Still down by another signal (say, the process is back, the guest silent),
                # or already held: the hold-down is not restarted by a repeated report.
                await self._save(fault)
            elif (delay := self.damping.delay(fault)) > 0:
                self._hold(fault, delay, event.id, event.details)
                log.info(
                    "fault held before it clears",
                    extra={"fault": fault.id, "seconds": round(delay, 3), "flaps": fault.flaps},
                )
                await self._save(fault)
            else:
                await self._clear(fault, event.id, event.details)
            await self._processed(event, fault.id, batch)
        else:
            await self._processed(event, None, batch)

    async def _processed(self, event: Event, fault_id: str | None, batch: _Batch | None) -> None:
        if batch is None:
            await self.events.mark_processed(event, fault_id)
        else:
            # Started now, awaited with the batch's others: the journal commits them
            # together.
            batch.marks.append(asyncio.ensure_future(self.events.mark_processed(event, fault_id)))

    def _adopt(self, event: Event, fault: Fault) -> Fault:
        """A fault another replica opened (this one has its events' partition now)."""
        log.info("fault taken over from another replica", extra={"fault": fault.id})
        self.active[event.key] = fault
        self.fault_graph.raised(fault)
        # What the rules decide from it was carried out by the replica that opened it;
        # work another fault here holds back for its owners is left to that fault.
        self.engine.run(keep_deferred=True)
        metrics.FAULTS_ACTIVE.set(len(self.active))
        return fault

    def _forget(self, fault: Fault) -> None:
        """A fault another replica cleared: what clearing it asked for was done there.
        The caller runs the rules (their plan was carried out there too)."""
        log.info("fault cleared by another replica", extra={"fault": fault.id})
        self.damping.drop(fault.key)
        self.damping.cleared(fault)
        self.fault_graph.cleared(fault)
        del self.active[fault.key]
        self.done.pop(fault.id, None)
        metrics.FAULTS_ACTIVE.set(len(self.active))

    def _open(self, event: Event) -> Fault:
        detected = event.trace.get("T01", event.time)
        fault = Fault(
            # Derived from the event: if this process dies before the event is marked
            # processed, its replay opens the same fault, and the owners, told again,
            # hear of the fault id that is recorded.
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor:fault/{event.id}")),
            type=event.type,
            hostname=event.hostname,
            started=detected,
            instance_id=event.instance_id,
            signals=[event.type],
        )
        for name, at in event.trace.items():
            fault.mark(name, at)
        fault.mark("T01", detected)
        self.damping.opened(fault)
        self.active[event.key] = fault
        self.done[fault.id] = asyncio.Event()
        metrics.FAULTS_ACTIVE.set(len(self.active))
        return fault

    async def _new_fault(self, event: Event, batch: _Batch | None = None) -> None:
        fault = self._open(event)
        self._announce("fault.opened", fault)
        severity = event.details.get("severity")
        self.fault_graph.raised(fault, severity if isinstance(severity, str) else None)
        if self.engine.graph.get(resource_of(fault)) is None:
            log.warning("fault of a resource the graph does not know", extra={"key": fault.key})
        outcome = await self._act(event, fault)
        await self._save(fault)
        await self._processed(event, fault.id, batch)
        self._after(fault, outcome)

    async def _again(self, event: Event, fault: Fault, batch: _Batch | None = None) -> None:
        """Another report about a resource already at fault: remember it, act once."""
        fault.repeats += 1
        metrics.event_outcome(event.type, "duplicate").inc()
        if fault.held_until is not None:
            # Down again before the hold-down ran out: the same fault, nothing redone
            # (the owners know, the host is still down), and a longer hold next time.
            fault.held_until = None
            fault.flaps += 1
            metrics.FLAPS.inc()
            log.warning("resource flapping", extra={"fault": fault.id, "flaps": fault.flaps})
        if event.type in fault.signals:
            await self._processed(event, fault.id, batch)
            return
        fault.signals.append(event.type)
        outcome = None
        if gravity(event.type) > gravity(fault.type):
            log.info(
                "fault escalated", extra={"fault": fault.id, "from": fault.type, "to": event.type}
            )
            fault.type = event.type
            self.fault_graph.raised(fault)
            outcome = await self._act(event, fault)
        await self._save(fault)
        await self._processed(event, fault.id, batch)
        if outcome is not None:
            self._after(fault, outcome)

    async def _act(self, event: Event, fault: Fault) -> Outcome:
        # Owners first: the rules stop once they know whom to tell and what to mark
        # down; the graph's own deductions (an alarm per server, states, causes) and
        # anything that follows from them are finished once the notifications are out.
        started = time.perf_counter()
        plan = self.engine.run(owners_first=True)
        metrics.RULE_EVALUATION.observe(time.perf_counter() - started)
        outcome = await self.effects.carry_out(plan, fault, event.id, event.details)
        while not self.engine.settled:
            more = self.engine.run(owners_first=True)
            if more:
                outcome.merge(await self.effects.carry_out(more, fault, event.id, event.details))
        metrics.DEDUCED_ALARMS.set(len(self.engine.alarms))
        return outcome

    def _after(self, fault: Fault, outcome: Outcome) -> None:
        """In the background: once the VIM has the host down and the servers in error,
        recover the servers of the hosts this fault took down; then say the work is done."""
        if outcome.in_flight:
            self._vim_work.setdefault(fault.id, []).extend(outcome.in_flight)
        self._background.spawn(self._finish(fault, outcome))

    async def _finish(self, fault: Fault, outcome: Outcome) -> None:
        settled = asyncio.ensure_future(self._settle(fault, outcome))
        try:
            # Recovery starts once the hosts are down in the VIM: it fences at once, and
            # moves nothing before the servers' own marks (error) have settled too.
            await outcome.marked()
            servers = [s for h in outcome.hosts_down for s in self.topology.servers_on(h)]
            if not servers and fault.type == HOST_UNREACHABLE:
                # Not marked down (it still runs its servers): recovery's cut-link policy
                # says whether they are left alone, or the host fenced and evacuated.
                servers = self.topology.servers_on(fault.hostname)
            # A host that ran no server is handed over too: it may be a node of an HA
            # cluster itself (`docs/haas.md`), to be power-cycled.
            if self.recover is not None and (servers or outcome.hosts_down):
                await self._recover(fault, servers, settled)
            await settled
            if self.recover_server is not None and fault.instance_id is not None:
                server = self.topology.servers.get(fault.instance_id)
                # A server on a host at fault is left to that host's recovery, which
                # moves all of its servers: restarting it there would race that.
                if server is not None and ("host", server.host) not in self.active:
                    await self._recover_server(fault, server)
        finally:
            if fault.id in self.done:
                self.done[fault.id].set()

    def _mark(self, fault: Fault, checkpoint: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        fault.mark(checkpoint, at)
        metrics.STAGE.labels(checkpoint).observe(max(0.0, at - fault.trace["T01"]))

    async def _settle(self, fault: Fault, outcome: Outcome) -> None:
        if outcome.in_flight:
            await outcome.settled()
            await self._save(fault)  # with T03 and T04

    async def _recover(self, fault: Fault, servers: list[Server], settled: Awaitable[None]) -> None:
        assert self.recover is not None
        await self.recover(fault, servers, settled)
        if fault.recovery and all(i.result == "ok" for i in fault.recovery):
            finished = [i.finished for i in fault.recovery if i.finished is not None]
            self._mark(fault, "T11", max(finished))
        await self._save(fault)

    async def _recover_server(self, fault: Fault, server: Server) -> None:
        assert self.recover_server is not None
        await self.recover_server(fault, server)
        item = next((i for i in fault.recovery if i.server_id == server.id), None)
        if item is not None and item.result == "ok":
            self._mark(fault, "T11", item.serving or item.finished)
        await self._save(fault)

    def _hold(self, fault: Fault, delay: float, seed: str, details: dict[str, Any]) -> None:
        self.damping.hold(fault, delay, lambda: self._clear(fault, seed, details))

    async def _clear(self, fault: Fault, seed: str, details: dict[str, Any]) -> None:
        fault.status = "cleared"
        fault.cleared = time.time()
        fault.held_until = None
        self._announce("fault.cleared", fault)
        self.damping.cleared(fault)
        marked_before = self.engine.marked()
        self.fault_graph.cleared(fault)
        plan = self.engine.run()
        metrics.DEDUCED_ALARMS.set(len(self.engine.alarms))
        del self.active[fault.key]
        now = time.monotonic()
        self.cleared_here[fault.id] = now
        while now - next(iter(self.cleared_here.values())) > CLEARED_MEMORY:
            self.cleared_here.popitem(last=False)
        self.done.pop(fault.id, None)
        metrics.FAULTS_ACTIVE.set(len(self.active))
        if plan:
            # A rule that holds because something cleared (a NOT): carry it out as well.
            await self.effects.carry_out(plan, None, seed, details)
        # What the fault asked of the VIM (host down) must land before it is undone
        # (host up): sent side by side, the VIM could apply them in either order.
        await asyncio.gather(*self._vim_work.pop(fault.id, []), return_exceptions=True)
        await self.release(marked_before)
        await self._save(fault, announce=False)  # announced as cleared above

    def forget(self, fault_ids: set[str]) -> None:
        """Drop faults another inspector has cleared (their partition went back to it,
        and the events that cleared them with it); the caller runs the rules."""
        for fault in [f for f in self.active.values() if f.id in fault_ids]:
            self._forget(fault)

    async def release(self, marked_before: set[str]) -> None:
        """Bring back up what was marked down for a reason that no longer holds (a fault
        cleared, a template deleted)."""
        refused = await self._unmark(marked_before - self.engine.marked())
        if refused:
            # Nova, for one, will not force a host up while evacuations from it wait for
            # its nova-compute to restart: ask again until it agrees, unless a new
            # reason marks the resource down meanwhile.
            self._background.spawn(
                keep_trying(functools.partial(self._unmark_again, refused), 1.0, UNMARK_MOST)
            )

    async def _unmark(self, keys: set[str]) -> set[str]:
        hosts = [k.removeprefix("host:") for k in keys if k.startswith("host:")]
        servers = [k.removeprefix("server:") for k in keys if k.startswith("server:")]
        return set(await self.effects.undo_marks(hosts, servers))

    async def _unmark_again(self, keys: set[str]) -> None:
        wanted = keys - self.engine.marked()
        refused = await self._unmark(wanted)
        if refused:
            keys.intersection_update(refused)  # what is lifted is not asked for again
            raise VimError(f"still marked down in the VIM: {', '.join(sorted(refused))}")
        if wanted:
            log.info("marks lifted after the VIM refused", extra={"marks": sorted(wanted)})

    def _announce(self, kind: str, fault: Fault) -> None:
        live = self.live
        if not live.listening:
            return
        # A host's fault is the infrastructure's (admins'); a server's, its owner's too.
        project = None
        if fault.instance_id is not None:
            server = self.topology.servers.get(fault.instance_id)
            project = server.project_id if server is not None else None
        data = {
            "id": fault.id,
            "type": fault.type,
            "hostname": fault.hostname,
            "instance_id": fault.instance_id,
            "status": fault.status,
            "trace": dict(fault.trace),  # as it is now: the fault goes on changing
        }
        live.publish(kind, data, project)

    async def _save(self, fault: Fault, announce: bool = True) -> None:
        """Store the fault, and tell the live stream it changed; if the database does not
        answer, keep trying in the background rather than lose it (its handling has gone
        on: the owners were told)."""
        if announce:
            # Before the write, which may take a while: the event carries what changed.
            self._announce("fault.changed", fault)
        try:
            await self._store(fault)
        except Exception as exc:
            log.warning("fault not stored yet", extra={"fault": fault.id, "error": str(exc)})
            if fault.id not in self._unsaved:
                self._unsaved.add(fault.id)
                self._background.spawn(self._save_later(fault))

    async def _store(self, fault: Fault) -> None:
        # One save of a fault at a time, each of the fault as it is when its turn comes:
        # two at once may commit in either order (a fault that clears as its recovery
        # ends), and the older picture would be the one that stays.
        async with self._saving.setdefault(fault.id, asyncio.Lock()):
            await self.faults.save(fault)

    async def _save_later(self, fault: Fault) -> None:
        try:
            # The latest state of the fault, whatever happened to it meanwhile.
            await keep_trying(lambda: self._store(fault), first=0.5, most=10.0)
            log.info("fault stored after all", extra={"fault": fault.id})
        finally:
            self._unsaved.discard(fault.id)

    async def close(self) -> None:
        await self.damping.close()
        await self._background.close()
