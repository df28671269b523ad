"""Faults as alarms in the entity graph, with what they cause: the basis of RCA.

A host fault raises an alarm on the host and, for every server on it, a deduced alarm
on the server that the host's alarm `causes`; a server fault raises one alarm on the
server. Resources under an alarm get a deduced ERROR state. Clearing the fault removes
its alarms and the deduced states. This is the built-in form of the "host down →
servers down" rule; rule templates will generalise it.
"""

from __future__ import annotations

from opendoctor.faults import Fault
from opendoctor.inspector.graph import CAUSES, ON, TopologyGraph, make_key
from opendoctor.inspector.states import Category, ResourceState
from opendoctor.model import Server

ALARM = Category.ALARM.value


def alarm_key(fault: Fault, server_id: str | None = None) -> str:
    return make_key("alarm", fault.id if server_id is None else f"{fault.id}/{server_id}")


class FaultGraph:
    def __init__(self, graph: TopologyGraph) -> None:
        self.graph = graph
        # Keys of the alarms raised here: listing them must not scan a million vertices.
        self.alarms: set[str] = set()

    def raised(self, fault: Fault, servers: list[Server]) -> None:
        if fault.instance_id is not None:
            resource = make_key("server", fault.instance_id)
        else:
            resource = make_key("host", fault.hostname)
        self._alarm(alarm_key(fault), fault.type, resource, fault)
        if fault.instance_id is not None:
            return
        for server in servers:
            effect = alarm_key(fault, server.id)
            self._alarm(effect, "compute.instance.down", make_key("server", server.id), fault)
            self.graph.link(alarm_key(fault), effect, CAUSES)

    def _alarm(self, key: str, name: str, resource: str, fault: Fault) -> None:
        alarm_id = key.removeprefix("alarm:")
        self.alarms.add(key)
        self.graph.upsert(
            ALARM,
            "alarm",
            alarm_id,
            name=name,
            raw_state="critical",
            props={"fault_id": fault.id, "resource": resource},
        )
        self.graph.link(key, resource, ON)
        target = self.graph.get(resource)
        if target is not None:
            target.deduced_state = ResourceState.ERROR.value

    def cleared(self, fault: Fault) -> None:
        root = alarm_key(fault)
        for alarm in [*self.graph.neighbors(root, CAUSES), self.graph.get(root)]:
            if alarm is None:
                continue
            for resource in self.graph.neighbors(alarm.key, ON):
                resource.deduced_state = None
            self.graph.remove(alarm.key)
            self.alarms.discard(alarm.key)
