"""The HA engine: takes the failures of cluster nodes from the inspector's recovery hook
(`app.haas`), decides by the cluster's policies (`haas.decision`) and carries the steps
out (`haas.operations`), keeping the node's and the cluster's state true, every step in
the history and the owner told (`haas.journal`).

Each step is tried `1 + retries` times, each attempt within the policy's `timeout`;
when one succeeds the node is `ok` again (after a switch-over, the ladder goes on to
repair the failed node, which comes back as a standby). When every step has run out the
node is `failed` and the cluster `degraded` (a healthy active node still serves, or,
without roles, some node is healthy) or `failed` (none does): an `escalated` entry says
so, and the owner hears it (`haas.cluster.state`).

Who does what on a host failure: host recovery (`recovery.evacuation`) fences the host
and evacuates its servers, except the cluster nodes this engine takes (those whose
policies give it something to do on a down host: evacuate or switch over). For those
this engine fences the host itself (once per fault, shared by its nodes) and moves them
into the policy's fail-over domain. A server is evacuated by one of the two, never both.
A host node is power-cycled only once host recovery is over with its servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.haas import ClusterView, Node, Service
from opendoctor.core.model import HEARTBEAT_UNHEALTHY, Server
from opendoctor.haas import operations as ops
from opendoctor.haas.decision import REPAIRS, Failure, Plan, Step, cluster_state, decide
from opendoctor.haas.journal import SWITCHOVER_EVENT, Journal
from opendoctor.haas.operations import Reach

log = logging.getLogger(__name__)

# Seconds an unhealthy guest's services are looked at for the one that failed.
REPORT_WAIT = 2.0


@dataclass(slots=True)
class Run:
    """One node's recovery: its cluster, what failed, the plan, the fault it is for, its
    server (None for a host node) and the fault's recovery item for that server."""

    view: ClusterView
    failure: Failure
    plan: Plan
    fault: Fault
    server: Server | None = None
    item: RecoveryItem | None = None

    @property
    def node(self) -> Node:
        return self.failure.node


class HaEngine:
    def __init__(self, reach: Reach) -> None:
        self.reach = reach
        self.store = reach.store
        self.journal = Journal(reach.store, reach.notify)
        self._busy: set[str] = set()  # nodes being recovered now
        self._roles: dict[str, asyncio.Lock] = {}  # per cluster: one role change at a time

    # --- what the inspector hands over ---------------------------------------------

    async def server_failed(self, fault: Fault, server: Server) -> bool:
        """Recover `server` by its cluster's policies; False if it is no node, or its
        policies give nothing to do (the default recovery's then)."""
        nodes = await self.store.nodes_of("server", server.id)
        if any(n.id in self._busy for n in nodes):
            return True  # its recovery is under way: a second beside it would undo it
        run = await self._plan_for(server, fault, False, nodes)
        if run is None:
            return False
        assert run.item is not None
        fault.recovery.append(run.item)
        await self._carry_out(run)
        return True

    async def take_hosted(self, fault: Fault, servers: list[Server]) -> list[Run]:
        """The cluster nodes among `servers` (of a failed host) whose policies act on a
        down host: this engine's to recover; host recovery takes the rest."""
        nodes: dict[str, list[Node]] = {}
        for node in await self.store.nodes_of("server", *(s.id for s in servers)):
            nodes.setdefault(node.ref, []).append(node)
        taken = [
            await self._plan_for(s, fault, True, nodes[s.id]) for s in servers if s.id in nodes
        ]
        return [run for run in taken if run is not None]

    async def recover_hosted(self, taken: list[Run], settled: Awaitable[None] | None) -> None:
        """Recover what `take_hosted` took, once the VIM has the servers' marks."""
        if settled is not None:
            await settled
        await asyncio.gather(*(self._carry_out(run) for run in taken))

    async def host_node_failed(self, fault: Fault, host: str) -> bool:
        """A host that is a node of a host-level cluster failed: its policies run."""
        for node in await self.store.nodes_of("host", host):
            view = await self.store.view(node.cluster_id)
            if view is None:
                continue
            failure = Failure(self._node(view, node), host_down=True, host=host)
            plan = decide(view, failure)
            await self.journal.skipped(view, node, plan)
            if plan.steps:
                await self._carry_out(Run(view, failure, plan, fault))
                return True
        return False

    async def _plan_for(
        self, server: Server, fault: Fault, host_down: bool, nodes: list[Node]
    ) -> Run | None:
        for node in nodes:
            view = await self.store.view(node.cluster_id)
            if view is None:
                continue
            node = self._node(view, node)
            failing = () if host_down else await self._failing(view, node, fault)
            failure = Failure(node, failing, host_down, server.host)
            plan = decide(view, failure)
            await self.journal.skipped(view, node, plan)
            if plan.steps:
                item = RecoveryItem(server.id, server.name, server.host, requested=time.time())
                item.method = f"haas:{view.cluster.name}"
                return Run(view, failure, plan, fault, server, item)
        return None

    @staticmethod
    def _node(view: ClusterView, node: Node) -> Node:
        return view.node(node.id) or node

    async def _failing(self, view: ClusterView, node: Node, fault: Fault) -> tuple[Service, ...]:
        """The cluster's services the guest agent reports unhealthy on this node, when the
        fault is (also) an unhealthy guest; none: the node itself failed.

        The services' health comes over the host link, the fault over the events API:
        the fault may be first. So the node's services are looked at until one is
        unhealthy, for `REPORT_WAIT` at most."""
        if HEARTBEAT_UNHEALTHY not in (fault.type, *fault.signals):
            return ()
        link = self.reach.guestlink()
        watched = [s for s in view.services if s.runs_on(node.id)]
        if link is None or not watched:
            return ()
        deadline = time.monotonic() + REPORT_WAIT
        while True:
            health = link.services(node.ref)
            failing = tuple(
                s for s in watched if s.guest_name in health and not health[s.guest_name].healthy
            )
            if failing or time.monotonic() > deadline:
                return failing
            await asyncio.sleep(0.05)

    # --- carrying a plan out -----------------------------------------------------------

    async def _carry_out(self, run: Run) -> None:
        view, failure, fault, item = run.view, run.failure, run.fault, run.item
        node = failure.node
        self._busy.add(node.id)
        try:
            what = (
                "services failed: " + ", ".join(s.name for s in failure.services)
                if failure.services
                else f"{node.kind} {node.ref} failed ({fault.type})"
            )
            await self.journal.history(view, node, what, "started", detail=f"fault {fault.id}")
            await self._set_node(view, node, state="recovering")
            await self.journal.state(view)  # the cluster is `recovering` meanwhile
            repaired = switched = False
            for step in run.plan.steps:
                if switched and step.operation not in REPAIRS:
                    continue
                if item is not None:
                    item.action = step.operation
                if await self._attempts(run, step):
                    if step.operation == "switch-over":
                        switched = True
                        continue
                    repaired = True
                    break
            if repaired:
                await self._set_node(view, node, state="ok")
            else:
                await self._set_node(view, node, state="failed")
            state = cluster_state(view)
            if item is not None:
                item.finished = time.time()
                if repaired:
                    item.result, item.serving = "ok", item.serving or item.finished
                else:
                    item.result = "failed"
                    item.error = f"every policy ran out; the cluster is {state}"
            if not repaired:
                await self.journal.history(
                    view,
                    node,
                    f"every policy ran out: node left failed, cluster {state}",
                    "escalated",
                )
        except Exception as exc:
            # The store out of reach, say: the node is left failed where that can be
            # written, and the recovery ends here (it is not handed on half done).
            log.error("HA recovery failed", extra={"node": node.id}, exc_info=exc)
            if item is not None:
                item.result, item.error = "failed", str(exc) or exc.__class__.__name__
                item.finished = time.time()
            with contextlib.suppress(Exception):
                await self._set_node(view, node, state="failed")
        finally:
            self._busy.discard(node.id)
            try:
                await self.journal.state(view)
            except Exception as exc:
                log.error("HA cluster state not kept", extra={"node": node.id}, exc_info=exc)

    async def _attempts(self, run: Run, step: Step) -> bool:
        view, item = run.view, run.item
        policy, node = step.policy, run.node
        for attempt in range(1, policy.retries + 2):
            label = f"{step.operation} attempt {attempt} (policy {policy.name})"
            if step.services:
                label += " of " + ", ".join(s.name for s in step.services)
            await self.journal.history(view, node, label, "started", step.operation)
            if item is not None:
                item.attempts += 1
                item.started = item.started or time.time()
            try:
                async with asyncio.timeout(policy.timeout):
                    detail = await self._operate(run, step)
            except Exception as exc:
                reason = str(exc) or exc.__class__.__name__
                if isinstance(exc, TimeoutError):
                    reason = f"not done within the policy's timeout ({policy.timeout:g}s)"
                await self.journal.history(view, node, label, "failed", step.operation, reason)
                await self.journal.attempt(view, node, step.operation, "failed", reason, attempt)
                continue
            await self.journal.history(view, node, label, "ok", step.operation, detail)
            await self.journal.attempt(view, node, step.operation, "ok", detail, attempt)
            return True
        return False

    async def _operate(self, run: Run, step: Step) -> str:
        failure, server = run.failure, run.server
        reach, node, timeout = self.reach, failure.node, step.policy.timeout
        op = step.operation
        if op == "switch-over":
            return await self._switch_over(run, step)
        if step.services:
            await ops.restart_services(reach, node.ref, step.services, timeout)
            return "restarted through the guest agent; healthy again"
        if node.kind == "host":
            if reach.power_cycle is None:
                raise ops.NotDone("hosts cannot be power-cycled here (recovery is off)")
            await reach.power_cycle(node.ref)
            return f"{node.ref} power-cycled through its BMC"
        assert server is not None
        if op == "restart":
            done = await ops.restart_server(reach, server, timeout)
        elif op == "rebuild":
            done = await ops.rebuild_server(reach, server, timeout)
        else:
            done = await ops.move_server(
                reach, run.fault, server, step.targets, failure.host_down, timeout
            )
        if run.item is not None:
            run.item.to_host, run.item.serving = done.host, time.time()
        return f"{op} done; serving on {done.host}"

    async def _switch_over(self, run: Run, step: Step) -> str:
        view, failure, fault = run.view, run.failure, run.fault
        node, reach = failure.node, self.reach
        # No split brain: the failed node is made sure to be off before another takes
        # its role (its host fenced, or its server stopped if its fencing device says so).
        fence = view.fence_of(node.id)
        if failure.host_down:
            host = node.ref if node.kind == "host" else failure.host
            if host is not None:
                await reach.fence(fault, host)
        elif fence is not None and fence.kind == "vim" and node.kind == "server":
            await ops.stop_server(reach, node.ref)
        lock = self._roles.setdefault(view.cluster.id, asyncio.Lock())
        async with lock:
            fresh = await self.store.view(view.cluster.id)
            current = {n.id: n for n in (fresh.nodes if fresh else view.nodes)}
            new = next(
                (
                    current[t]
                    for t in step.targets
                    if t in current and current[t].state == "ok" and current[t].role == "standby"
                ),
                None,
            )
            if new is None:
                raise ops.NotDone("no standby is healthy any more")
            await self._set_node(view, new, role="active")
            await self._set_node(view, node, role="standby")
            await self.store.move_resources(view.cluster.id, node.id, new.id)
        moved = sorted(r.name for r in view.resources if r.node_id == node.id)
        reason = f"{node.ref} failed: {new.ref} took over"
        if moved:
            reason += " and holds " + ", ".join(moved)
        if new.kind == "server":
            await ops.announce(reach, new.ref, "active", reason)
        if node.kind == "server":
            await ops.announce(reach, node.ref, "standby", reason)
        await self.journal.tell(
            SWITCHOVER_EVENT,
            view,
            f"{fault.id}/switchover/{node.id}/{new.id}",
            instance_id=new.ref if new.kind == "server" else None,
            active=new.ref,
            previous=node.ref,
            resources=",".join(moved) or None,
            reason=reason,
        )
        return reason

    # --- states, history, the owner ---------------------------------------------------

    async def _set_node(self, view: ClusterView, node: Node, **values: str) -> None:
        await self.store.set_node(node.id, **values)
        for held in (node, view.node(node.id)):
            if held is not None:
                for name, value in values.items():
                    setattr(held, name, value)
