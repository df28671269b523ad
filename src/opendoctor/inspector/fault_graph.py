"""Faults as alarms in the entity graph: what the rule templates start from.

An active fault is one alarm vertex `alarm:<fault id>`, named after the event type and
[on] the resource the fault is about (a host, a server, or any vertex a `resource.down`
event names). What follows from it (servers down, hosts unreachable, causes) is for the
templates to deduce. Clearing the fault removes the alarm, and the engine undoes what
it deduced from it.

Scaled out, each inspector handles the faults of its bus partitions and also mirrors
every other partition's active faults into its graph (`foreign`), so that a template
about two hosts in different partitions sees both. Every inspector then deduces the
same, but only one acts on a match: the one that handles the newest fault behind it
(`acts`), which all of them agree on.
"""

from __future__ import annotations

from collections.abc import Iterable

from opendoctor.core.faults import Fault
from opendoctor.core.model import HOST_UNREACHABLE
from opendoctor.inspector.graph import CAUSES, ON, TopologyGraph, make_key
from opendoctor.inspector.graph.history import AlarmHistory
from opendoctor.inspector.graph.states import Category, normalize, priority

ALARM = Category.ALARM.value

# Severity of a fault's alarm by its event type; a monitor may say otherwise in
# details.severity. Anything not listed is critical.
SEVERITIES = {HOST_UNREACHABLE: "warning"}


def severity_of(event_type: str) -> str:
    return SEVERITIES.get(event_type, "critical")


def gravity(event_type: str) -> int:
    """How grave a fault of this type is, to compare two reports about one resource."""
    return priority(Category.ALARM, normalize(Category.ALARM, "alarm", severity_of(event_type)))


def alarm_key(fault: Fault) -> str:
    return make_key("alarm", fault.id)


def resource_of(fault: Fault) -> str:
    return make_key(*fault.key)


class FaultGraph:
    def __init__(self, graph: TopologyGraph, history: AlarmHistory) -> None:
        self.graph = graph
        self.history = history
        # Keys of the faults' alarms: listing them must not scan a million vertices.
        self.alarms: set[str] = set()
        # Those of faults another inspector handles (mirrored from the store).
        self.foreign: set[str] = set()

    def raised(self, fault: Fault, severity: str | None = None, foreign: bool = False) -> None:
        key = alarm_key(fault)
        resource = resource_of(fault)
        self.alarms.add(key)
        if foreign:
            self.foreign.add(key)
        else:
            self.foreign.discard(key)  # taken over: it is this inspector's now
        alarm = self.graph.upsert(
            ALARM,
            "alarm",
            fault.id,
            name=fault.type,
            raw_state=severity or severity_of(fault.type),
            props={"fault_id": fault.id, "resource": resource, "started": fault.started},
        )
        self.graph.link(key, resource, ON)
        self.history.record("raised", alarm, resource, None)

    def cleared(self, fault: Fault) -> None:
        key = alarm_key(fault)
        alarm = self.graph.get(key)
        if alarm is not None:
            self.history.record("cleared", alarm, resource_of(fault), None)
            self.graph.remove(key)
        self.alarms.discard(key)
        self.foreign.discard(key)

    def acts(self, bound: Iterable[str]) -> bool:
        """Whether this inspector carries out what a match binding `bound` decides.

        The faults behind a match are those whose alarms it binds, and those at the root
        of the deduced alarms it binds (through `causes` edges). The newest of them, by
        start time then id, is handled by exactly one inspector: that one acts. A match
        with no fault behind it (a template over VIM states) is acted on everywhere, as
        when nothing is mirrored."""
        if not self.foreign:
            return True
        newest: tuple[float, str] | None = None
        seen: set[str] = set()
        todo = [k for k in bound if k.startswith("alarm:")]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            if key in self.alarms:
                vertex = self.graph.get(key)
                started = (vertex.props or {}).get("started", 0.0) if vertex else 0.0
                newest = max(newest or (started, key), (started, key))
            else:
                todo.extend(n.key for n in self.graph.neighbors(key, CAUSES, "in"))
        return newest is None or newest[1] not in self.foreign
