"""Faults as alarms in the entity graph: what the rule templates start from.

An active fault is one alarm vertex `alarm:<fault id>`, named after the event type and
[on] the resource the fault is about (a host, a server, or any vertex a `resource.down`
event names). What follows from it (servers down, hosts unreachable, causes) is for the
templates to deduce. Clearing the fault removes the alarm, and the engine undoes what
it deduced from it.
"""

from __future__ import annotations

from opendoctor.core.faults import Fault
from opendoctor.core.model import HOST_UNREACHABLE
from opendoctor.inspector.graph import ON, TopologyGraph, make_key
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

    def raised(self, fault: Fault, severity: str | None = None) -> None:
        key = alarm_key(fault)
        resource = resource_of(fault)
        self.alarms.add(key)
        alarm = self.graph.upsert(
            ALARM,
            "alarm",
            fault.id,
            name=fault.type,
            raw_state=severity or severity_of(fault.type),
            props={"fault_id": fault.id, "resource": resource},
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
