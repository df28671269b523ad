"""What the engine keeps and tells about a cluster: its history, its state (what its
nodes make it), and the events its owner's Aodh event alarms match (each attempt's
outcome, a switch-over, a change of the cluster's state). None of it stops a recovery
when it fails: it is logged instead."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from opendoctor.core.haas import ClusterView, HistoryEntry, Node
from opendoctor.core.model import NotificationEvent
from opendoctor.core.ports import NotifyTarget
from opendoctor.haas.decision import Plan, cluster_state
from opendoctor.store.haas import HaasStore

log = logging.getLogger(__name__)

RECOVERY_EVENT = "haas.cluster.recovery"
SWITCHOVER_EVENT = "haas.cluster.switchover"
STATE_EVENT = "haas.cluster.state"


class Journal:
    def __init__(self, store: HaasStore, notify: NotifyTarget | None) -> None:
        self.store = store
        self.notify = notify

    async def history(
        self,
        view: ClusterView,
        node: Node | None,
        what: str,
        outcome: str,
        operation: str | None = None,
        detail: str = "",
    ) -> None:
        node_id = node.id if node is not None else None
        entry = HistoryEntry(
            view.cluster.id, what[:1000], outcome, node_id, operation, detail[:1000]
        )
        try:
            await self.store.record(entry)
        except Exception as exc:
            log.error("HA history not kept", extra={"what": what, "error": str(exc)})

    async def skipped(self, view: ClusterView, node: Node, plan: Plan) -> None:
        for policy, why in plan.skipped:
            what = f"policy {policy.name} ({policy.operation}) left out"
            await self.history(view, node, what, "skipped", policy.operation, why)

    async def state(self, view: ClusterView) -> None:
        """The cluster's state as its nodes (in the store) make it now: kept, and when it
        changed, in the history and told (but the passing `recovering`: the owner hears
        how it ends)."""
        fresh = await self.store.view(view.cluster.id)
        if fresh is None:
            return
        before, state = fresh.cluster.state, cluster_state(fresh)
        if state == before:
            return
        await self.store.set_state(fresh.cluster.id, state)
        view.cluster.state = state
        await self.history(view, None, f"cluster {before} -> {state}", "changed")
        if state != "recovering":
            seed = f"{fresh.cluster.id}/state/{state}/{time.time()}"
            await self.tell(STATE_EVENT, view, seed, state=state, previous=before)

    async def attempt(
        self, view: ClusterView, node: Node, operation: str, result: str, reason: str, n: int
    ) -> None:
        await self.tell(
            RECOVERY_EVENT,
            view,
            f"{view.cluster.id}/{node.id}/{operation}/{n}/{result}/{time.time()}",
            instance_id=node.ref if node.kind == "server" else None,
            node_id=node.id,
            action=operation,
            result=result,
            attempt=n,
            reason=reason[:1000],
        )

    async def tell(self, event_type: str, view: ClusterView, seed: str, **traits: Any) -> None:
        """One event about the cluster (its id, name and project, and `traits`); its id
        from `seed`, so that one sent again is recognisably the same."""
        if self.notify is None:
            return
        cluster = view.cluster
        event = NotificationEvent.build(
            event_type,
            message_id=str(uuid.uuid5(uuid.NAMESPACE_OID, seed)),
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            project_id=cluster.project_id,
            tenant_id=cluster.project_id,
            **traits,
        )
        try:
            sent = await self.notify.notify_many([([event], {"event_type": event_type})])
            await self.notify.landed(sent)
        except Exception as exc:
            log.error("HA notice not sent", extra={"event": event_type, "error": str(exc)})
