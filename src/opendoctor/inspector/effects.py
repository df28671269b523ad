"""Carrying out what the rule engine decided: tell the owners, then change the VIM.

The order is the hot path's: every owner's notification starts at once (grouped by
root cause, one notifier call per group); forcing hosts down is one call per host and
starts with them; setting each server to error waits until every owner has had a
first attempt (or `notifier.first_attempt_wait` has passed: a consumer that never
answers holds nobody up for long), because on a shared CPU those calls would delay the
owners (DESIGN §1: the owner is told first). Nothing here waits on the VIM before the
owners are told, and `carry_out` returns once they are: the VIM calls go on in the
background (a VIM that hangs must hold up neither this fault's record nor the next
event), and `Outcome.settled()` waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from opendoctor.core.faults import Fault
from opendoctor.core.model import NotificationEvent, Server
from opendoctor.core.notifications import PENDING, OutboxEntry
from opendoctor.core.ports import NotifyTarget, VimDriver, VimError
from opendoctor.core.settings import InspectorSettings
from opendoctor.infra import metrics
from opendoctor.infra.tasks import Background
from opendoctor.inspector.graph import TopologyGraph, split_key
from opendoctor.inspector.templates.deductions import NotifyEffect, Plan, WorkflowEffect
from opendoctor.inspector.topology import Topology

log = logging.getLogger(__name__)


class WorkflowRunner(Protocol):
    """Where `run_workflow` actions go: the workflow engine (`workflow.service`)."""

    async def run(self, workflow: str, given: dict[str, Any], origin: str) -> str | None:
        """Start `workflow` with `given` (what the template knows) for template `origin`;
        the execution's id, or None if it was not started."""


class LoggingWorkflows:
    """The stand-in where no engine is wired (unit tests): records and logs each request."""

    def __init__(self) -> None:
        self.requested: list[tuple[str, dict[str, Any]]] = []

    async def run(self, workflow: str, given: dict[str, Any], origin: str) -> str | None:
        self.requested.append((workflow, given))
        log.info("workflow requested", extra={"workflow": workflow, "template": origin})
        return None


@dataclass(slots=True)
class Outcome:
    hosts_down: list[str] = field(default_factory=list)  # names the VIM has down (once settled)
    servers: list[Server] = field(default_factory=list)  # servers whose owners were told
    # Hosts being forced down and servers being set to error in the VIM, after (or
    # beside) the owners' first attempts; and first attempts that outlasted the wait.
    in_flight: list[asyncio.Future[None]] = field(default_factory=list)
    # Those of `in_flight` that force hosts down: recovery may fence once they are done.
    marking: list[asyncio.Future[None]] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        self.hosts_down += other.hosts_down
        self.servers += other.servers
        self.in_flight += other.in_flight
        self.marking += other.marking

    async def settled(self) -> None:
        await asyncio.gather(*self.in_flight)

    async def marked(self) -> None:
        await asyncio.gather(*self.marking)


Mark = Callable[[Fault, str, float | None], None]


def note_for(
    effect: NotifyEffect,
    server: Server | None,
    resource: tuple[str, str],
    project: str | None,
    seed: str,
    fault: Fault | None,
) -> NotificationEvent:
    fault_id = fault.id if fault else None
    # Stable per (event, resource): a replayed event yields the same message ids.
    message_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}/{resource[1]}"))
    if server is not None:
        return NotificationEvent.build(
            effect.event_type,
            fault_id=fault_id,
            message_id=message_id,
            instance_id=server.id,
            state=effect.state,
            host=server.host,
            project_id=server.project_id,
            tenant_id=server.project_id,
        )
    return NotificationEvent.build(
        effect.event_type,
        fault_id=fault_id,
        message_id=message_id,
        resource_type=resource[0],
        resource_id=resource[1],
        state=effect.state,
        project_id=project,
        tenant_id=project,
    )


class Effects:
    def __init__(
        self,
        topology: Topology,
        graph: TopologyGraph,
        vim: VimDriver,
        notifier: NotifyTarget,
        settings: InspectorSettings,
        workflows: WorkflowRunner,
        mark: Mark,
    ) -> None:
        self.topology = topology
        self.graph = graph
        self.vim = vim
        self.notifier = notifier
        self.settings = settings
        self.workflows = workflows
        self.mark = mark
        # Held here: nobody awaits the VIM calls of a plan that no fault owns.
        self._running = Background()
        # The servers being set to error, every fault's together: a storm of 100 host
        # faults is not 100 times as many calls at once to the VIM.
        self._marking = asyncio.Semaphore(settings.vim_concurrency)

    def _server(self, key: str) -> Server | None:
        type_, id_ = split_key(key)
        return self.topology.servers.get(id_) if type_ == "server" else None

    def root_cause(
        self, fault: Fault | None, cause: str | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        """What reason_data.root_cause tells the owner: the fault, and the alarm at the
        root of the causal chain that led to this notification."""
        out: dict[str, Any] = {}
        if fault is not None:
            out = {"fault_id": fault.id, "event_type": fault.type, "hostname": fault.hostname}
            if fault.instance_id is not None:
                out["instance_id"] = fault.instance_id
        if details.get("reason"):
            out["reason"] = details["reason"]
        vertex = self.graph.get(cause) if cause else None
        if vertex is not None:
            causes, _ = self.graph.causal_chain(vertex.key)
            root = causes[-1] if causes else vertex
            out["alarm_id"] = root.id
            out["alarm_type"] = root.name
            out["alarm_resource"] = (root.props or {}).get("resource")
            out["cause_alarm_id"] = vertex.id
        return out

    async def carry_out(
        self, plan: Plan, fault: Fault | None, seed: str, details: dict[str, Any] | None = None
    ) -> Outcome:
        outcome = Outcome()
        groups: dict[str | None, list[NotificationEvent]] = {}
        for effect in plan.notify:
            server = self._server(effect.target)
            vertex = self.graph.get(effect.target)
            if server is None and vertex is None:
                continue
            if server is not None:
                outcome.servers.append(server)
            resource = split_key(effect.target)
            project = vertex.project if vertex is not None else None
            note = note_for(effect, server, resource, project, seed, fault)
            if fault is not None:
                # When the fault was detected, not when this note was made: replayed after
                # a crash, the event sends the owners the very callbacks they had.
                note.generated = fault.started
            groups.setdefault(effect.cause, []).append(note)
        if fault is not None:
            known = set(fault.affected)
            fault.affected.extend(s.id for s in outcome.servers if s.id not in known)
            self.mark(fault, "T02", None)
        hosts = [split_key(k)[1] for k in plan.mark_down if k.startswith("host:")]
        to_error = [s for k in plan.mark_down if (s := self._server(k)) is not None]
        causes = {c: self.root_cause(fault, c, details or {}) for c in groups}
        # Beside the owners' first attempts, and not awaited here: a VIM that hangs must
        # not keep the fault from being recorded, nor, on a partitioned bus, the next
        # event (another host's owners) from being handled.
        outcome.marking += [self._running.spawn(self._force_down(fault, h, outcome)) for h in hosts]
        outcome.in_flight += outcome.marking
        late = await self._notify(fault, groups, causes)
        if late is not None:
            outcome.in_flight.append(self._running.spawn(late))
        if to_error:
            # Once every owner has had a first attempt: these calls would compete with
            # theirs for the CPU.
            outcome.in_flight.append(self._running.spawn(self._set_error(fault, to_error)))
        for workflow in plan.workflows:
            metrics.WORKFLOWS_REQUESTED.labels(workflow.workflow).inc()
            try:
                given = self.workflow_input(workflow, fault)
                await self.workflows.run(workflow.workflow, given, workflow.template)
            except Exception:
                log.exception("workflow request failed", extra={"workflow": workflow.workflow})
        return outcome

    def workflow_input(self, effect: WorkflowEffect, fault: Fault | None) -> dict[str, Any]:
        """What a workflow that a template starts is given (it takes the names it declares):
        the template's params; `template`; `resources`, each entity of the match as
        {type, id}; `target` likewise, and its id under its type's name (`host`,
        `server`); for a host, `servers`, the ids of those on it; and `fault`."""

        def entity(key: str) -> dict[str, str]:
            kind, name = split_key(key)
            return {"type": kind, "id": name}

        given: dict[str, Any] = {**effect.params, "template": effect.template}
        given["resources"] = {name: entity(key) for name, key in effect.binding.items()}
        if effect.target is not None:
            target = given["target"] = entity(effect.target)
            given[target["type"]] = target["id"]
            if target["type"] == "server":
                given["server_id"] = target["id"]
            if target["type"] == "host":
                given["servers"] = [s.id for s in self.topology.servers_on(target["id"])]
        if fault is not None:
            given["fault"] = fault.brief()
        return given

    async def _notify(
        self,
        fault: Fault | None,
        groups: dict[str | None, list[NotificationEvent]],
        causes: dict[str | None, dict[str, Any]],
    ) -> Coroutine[Any, Any, None] | None:
        """Tell the owners; returns, if some first attempts outlast the notifier's wait,
        the work that brings T09 up to date once they end."""
        sent = await self.notifier.notify_many([(notes, causes[c]) for c, notes in groups.items()])
        delivered = [e.delivered for e in sent if e.delivered is not None]
        if fault is not None and delivered:
            self.mark(fault, "T09", max(delivered))
        if fault is None or all(e.status != PENDING or e.attempts != 1 for e in sent):
            return None
        return self._late_t09(fault, sent)

    async def _late_t09(self, fault: Fault, sent: list[OutboxEntry]) -> None:
        # T09 is when the last owner heard: a late answer moves it on.
        await self.notifier.landed(sent)
        delivered = [e.delivered for e in sent if e.delivered is not None]
        if delivered and max(delivered) > fault.trace.get("T09", 0.0):
            fault.trace["T09"] = max(delivered)

    async def _force_down(self, fault: Fault | None, hostname: str, outcome: Outcome) -> None:
        try:
            await self.vim.force_down(hostname, True)
        except VimError as exc:
            metrics.VIM_ERRORS.labels("force_down").inc()
            log.error("could not mark host down", extra={"host": hostname, "error": str(exc)})
            return
        host = self.topology.hosts.get(hostname)
        if host is not None:
            host.forced_down, host.state = True, "down"
        outcome.hosts_down.append(hostname)
        if fault is not None:
            self.mark(fault, "T04", None)

    async def _set_error(self, fault: Fault | None, servers: list[Server]) -> None:
        if not servers:
            return
        # One batch for the fault's servers: a storm's ten thousand requests, one each,
        # cost the service a tenth of its time (the VIMs that take one server at a time
        # are still asked once per server, by their driver).
        async with self._marking:
            try:
                refused = await self.vim.reset_states([s.id for s in servers], "error")
            except VimError as exc:
                refused = {s.id: str(exc) for s in servers}
        for server in servers:
            problem = refused.get(server.id)
            if problem is None:
                server.status = "ERROR"
                continue
            metrics.VIM_ERRORS.labels("reset_state").inc()
            log.error(
                "could not set server to error", extra={"server": server.id, "error": problem}
            )
        if fault is not None and not refused:
            self.mark(fault, "T03", time.time())

    async def undo_marks(self, hosts: list[str], servers: list[str]) -> list[str]:
        """Bring back what no remaining reason keeps down (after a fault clears); the
        marks the VIM refused to lift (`host:NAME`, `server:ID`), each logged."""
        refused: list[str] = []

        async def lift(key: str, call: Awaitable[None]) -> bool:
            try:
                await call
            except VimError as exc:
                metrics.VIM_ERRORS.labels("clear").inc()
                log.warning("the VIM did not lift a mark", extra={"mark": key, "error": str(exc)})
                refused.append(key)
                return False
            return True

        for name in hosts:
            if await lift(f"host:{name}", self.vim.force_down(name, False)):
                host = self.topology.hosts.get(name)
                if host is not None:
                    host.forced_down, host.state = False, "up"
        for server_id in servers:
            server = self.topology.servers.get(server_id)
            # Only undo what a fault did: a server someone else changed meanwhile stays.
            if server is None or server.status != "ERROR":
                continue
            if await lift(f"server:{server_id}", self.vim.reset_state(server_id, "active")):
                server.status = "ACTIVE"
        return refused
