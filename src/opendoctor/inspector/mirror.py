"""Every partition's faults in one graph: what a scaled-out process mirrors from the store.

Each inspector handles the faults of its own bus partitions. To let a template see two
faults of different partitions together, every inspector also puts the other
partitions' active faults into its graph as foreign alarms, read from the store every
`inspector.fault_sync_interval`; only one inspector acts on what follows
(`FaultGraph.acts`). An api process without the inspector role mirrors every fault, so
that it can show the same graph, alarms and root causes; it acts on nothing.

The same pass drops local faults that the store says another inspector cleared: after
a replica returns and takes its partitions back, the events that clear its faults go to
it, and the survivor must not keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from opendoctor.core.faults import Fault
from opendoctor.inspector.fault_graph import FaultGraph, alarm_key
from opendoctor.inspector.templates import Engine, Plan
from opendoctor.store.pipeline import FaultStore

log = logging.getLogger(__name__)


class FaultMirror:
    def __init__(
        self,
        faults: FaultStore,
        fault_graph: FaultGraph,
        engine: Engine,
        local: Callable[[], Mapping[tuple[str, str], Fault]] = dict,
        cleared_here: Mapping[str, float] | None = None,
        forget: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.faults = faults
        self.fault_graph = fault_graph
        self.engine = engine
        self._local = local
        self._cleared_here = cleared_here if cleared_here is not None else {}
        self._forget = forget
        self.mirrored: dict[str, Fault] = {}  # alarm key -> the fault as last read

    async def sync(self) -> Plan:
        """Bring the foreign alarms in line with the store; returns what the rules now
        want done by this process (a template that two partitions' faults complete)."""
        active = await self.faults.active_heads()
        local = {f.id for f in self._local().values()}
        gone: set[str] = set()
        if self._forget is not None and local:
            gone = await self.faults.cleared_among(local)
            if gone:
                self._forget(gone)
                local -= gone
                if self.engine.attached:
                    # What follows was done by the inspector that cleared them.
                    self.engine.run(keep_deferred=True)
        # `active` was read before `gone`: a fault cleared in between is in both, and
        # must not come back as another's.
        skip = local | gone
        wanted = {
            alarm_key(f): f for f in active if f.id not in skip and f.id not in self._cleared_here
        }
        changed = False
        for key, fault in list(self.mirrored.items()):
            if key in wanted:
                continue
            del self.mirrored[key]
            if fault.id not in local:  # cleared by its inspector (not taken over here)
                self.fault_graph.cleared(fault)
            changed = True
        for key, fault in wanted.items():
            seen = self.mirrored.get(key)
            if seen is None or seen.type != fault.type:  # new, or escalated
                self.fault_graph.raised(fault, foreign=True)
                self.mirrored[key] = fault
                changed = True
        if changed:
            log.debug("foreign faults mirrored", extra={"faults": len(self.mirrored)})
        if not (changed and self.engine.attached):
            return Plan()
        return self.engine.run(keep_deferred=True)
