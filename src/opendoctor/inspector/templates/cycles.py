"""The check that no set of templates lets an alarm keep itself raised.

An alarm a template raises "can trigger" another if it fits an entity of a scenario
that raises the other (and sits on the kind of resource that entity is [on]). A cycle
would keep alarms alive by themselves after the real fault is gone: it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from opendoctor.inspector.graph import Vertex
from opendoctor.inspector.graph.states import Category, normalize
from opendoctor.inspector.templates.model import Clause, Template, clauses_within
from opendoctor.inspector.templates.schema import RaiseAlarm


def _hypothetical(action: RaiseAlarm) -> Vertex:
    state = normalize(Category.ALARM, "alarm", action.severity)
    return Vertex(
        f"alarm:{action.name}",
        Category.ALARM,
        "alarm",
        action.name,
        action.name,
        raw_state=action.severity,
        state=state,
        props={"deduced": True},
    )


def _can_bind(template: Template, clause: Clause, entity: str, on_type: str | None) -> bool:
    """Could an alarm on a resource of type `on_type` stand for `entity` in `clause`?"""
    for rel in clause.relations:
        if rel.source == entity and rel.label == "on":
            wanted = template.entities[rel.target].type
            if wanted is not None and on_type is not None and wanted != on_type:
                return False
    return True


def find_cause_cycle(templates: Iterable[Template]) -> list[str] | None:
    """A chain of deduced alarm names in which the last can again trigger the first.

    An alarm a template raises "can trigger" another if it fits an entity of a scenario
    that raises the other (and sits on the kind of resource that entity is [on]). A cycle
    would keep alarms alive by themselves after the real fault is gone: refused.
    """
    templates = list(templates)
    raised = [(t, s, a) for t in templates for s, a in t.raised()]
    edges: dict[str, set[str]] = {a.name: set() for _, _, a in raised}
    for producer, _, produced in raised:
        vertex = _hypothetical(produced)
        on_type = producer.entities[produced.target].type
        for template, scenario, other in raised:
            if any(
                template.entities[e](vertex) and _can_bind(template, c, e, on_type)
                for outer in scenario.clauses
                for c in clauses_within(outer)
                for e in c.entities
            ):
                edges[produced.name].add(other.name)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for nxt in sorted(edges[name]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (found := visit(name)):
            return found
    return None
