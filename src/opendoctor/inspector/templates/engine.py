"""The rule engine: keeps every template's matches current as the graph changes.

The graph tells the engine what changed (`GraphListener`); `run()` re-evaluates only the
matches that could involve a changed vertex, applies the actions of new matches and
undoes those of matches that stopped holding, until nothing more changes. Effects on the
graph (deduced alarms, states, causal edges) are reference-counted, so that two reasons
for the same deduction make one alarm, which goes when the last reason goes. Effects on
the world (notify, mark down, run a workflow) fire once when their first reason appears
and are handed back to the caller in a `Plan` to carry out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from opendoctor.inspector.graph import CAUSES, ON, Direction, TopologyGraph, Vertex, make_key
from opendoctor.inspector.history import AlarmHistory
from opendoctor.inspector.states import Category, priority
from opendoctor.inspector.templates.compiler import Clause, Scenario, Template
from opendoctor.inspector.templates.schema import (
    AddCausalRelationship,
    MarkDown,
    Notify,
    RaiseAlarm,
    RunWorkflow,
    SetState,
)

log = logging.getLogger(__name__)

ALARM = Category.ALARM.value
RESOURCE = Category.RESOURCE.value

# (template, scenario, clause, the vertex keys bound to the clause's entities)
MatchKey = tuple[str, int, int, tuple[str, ...]]
Binding = dict[str, Vertex]
Token = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class NotifyEffect:
    target: str  # vertex key
    event_type: str
    state: str
    cause: str | None  # key of the alarm the match holds
    template: str


@dataclass(frozen=True, slots=True)
class WorkflowEffect:
    workflow: str
    target: str | None
    params: dict[str, str]
    binding: dict[str, str]
    template: str


@dataclass(slots=True)
class Plan:
    """What the engine wants done outside the graph, in the order it was decided."""

    notify: list[NotifyEffect] = field(default_factory=list)
    mark_down: list[str] = field(default_factory=list)
    workflows: list[WorkflowEffect] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.notify or self.mark_down or self.workflows)


@dataclass(slots=True)
class Match:
    key: MatchKey
    binding: dict[str, str]
    tokens: list[Token]


def deduced_key(name: str, target: str) -> str:
    return make_key("alarm", f"{name}@{target}")


Slot = tuple[Template, Scenario, Clause, str]
GRAPH_ACTIONS = (RaiseAlarm, SetState, AddCausalRelationship)


def _slot_key(t: Template, c: Clause, entity: str) -> str | None:
    matcher = t.entities[entity]
    if matcher.category != ALARM:
        return matcher.type
    for rel in c.relations:
        if rel.source == entity and rel.label == ON:
            return "@" + (t.entities[rel.target].type or "")
    return "@"


def _rank(t: Template, entity: str) -> int:
    m = t.entities[entity]
    return 0 if m.category == ALARM else 1 if m.type is not None else 2


class Engine:
    def __init__(
        self, graph: TopologyGraph, history: AlarmHistory | None = None, max_rounds: int = 200
    ) -> None:
        self.graph = graph
        self.history = history if history is not None else AlarmHistory()
        self.max_rounds = max_rounds
        self.templates: dict[str, Template] = {}
        self.matches: dict[MatchKey, Match] = {}
        self.by_vertex: dict[str, set[MatchKey]] = {}
        self.alarms: dict[str, int] = {}  # deduced alarm key -> reasons
        self.causes: dict[tuple[str, str], int] = {}
        self.states: dict[str, dict[str, int]] = {}
        self.once: dict[tuple[Any, ...], int] = {}  # notify / mark_down / workflow reasons
        self.dirty: set[str] = set()
        self._plan = Plan()
        # Where each entity of each clause may stand, by the vertex type it needs; alarm
        # entities by "@" and the type of the resource the alarm must be [on], so a new
        # alarm on a server is never tried against rules about alarms on hosts.
        self._slots: dict[str | None, list[Slot]] = {}
        self._wide = False  # some NOT reaches past the bound entities: look at neighbours
        self._state_sensitive = False  # some resource entity tests the state
        self._acting = False
        self.attached = False
        self._owners_first = False
        # Graph effects held back while owners are told first (see `run`).
        self._deferred: list[tuple[Match, Template, Any, str | None]] = []
        # Vertex types whose own fields some entity tests; a change to a vertex of any
        # other type cannot change a match by itself (its edges are reported apart).
        self._field_types: set[str | None] = set()

    def attach(self) -> Plan:
        """Start following the graph: evaluate everything once, then only what changes.

        Until then templates are only registered, so that loading a large topology at
        start does not mean re-evaluating each vertex as it arrives."""
        self.graph.listener = self
        self.attached = True
        return self.evaluate_all()

    # -- the graph's feed ---------------------------------------------------------------

    def vertex_changed(self, key: str, fresh: bool) -> None:
        if self._acting:
            return
        if fresh:  # new, or a placeholder made real: it may now complete matches
            self.dirty.add(key)
            return
        v = self.graph.get(key)
        if v is None or v.category == ALARM or {None, v.type} & self._field_types:
            self.dirty.add(key)

    def edge_changed(self, source: str, target: str) -> None:
        if self._acting:
            return
        # Every match that uses the edge binds both ends, so one end is enough to find
        # it again; an alarm end has few neighbours, a host may have hundreds.
        # A NOT over an unbound entity looks past the edge's ends, from both of them.
        s = self.graph.get(source)
        if self._wide or s is None or self.graph.get(target) is None:
            self.dirty.update((source, target))
        elif s.category == ALARM:
            self.dirty.add(source)
        else:
            self.dirty.add(target)

    def vertex_removed(self, key: str, neighbors: list[str]) -> None:
        if self._acting:
            return
        self.dirty.add(key)
        if self._wide:
            self.dirty.update(neighbors)

    # -- templates ----------------------------------------------------------------------

    def add(self, template: Template) -> Plan:
        """Add (or replace) a template and evaluate it over the whole graph."""
        # Replacing: the old version's notify/mark_down reasons are held until the new
        # one is evaluated, so what both versions decide is not done a second time.
        held: list[Any] = []
        if template.name in self.templates:
            self._drop(template.name, held)
            self.run()
        self.templates[template.name] = template
        self._reindex()
        if self.attached:
            self._evaluate_all([template])
        plan = self.run() if self.attached else Plan()
        for key in held:
            self._count(self.once, key, -1)
        return plan

    def remove(self, name: str) -> Plan:
        """Take a template out; what it deduced is undone (raises KeyError if unknown)."""
        self.templates.pop(name)
        self._drop(name)
        self._reindex()
        return self.run()

    def _drop(self, name: str, held: list[Any] | None = None) -> None:
        for mk in [mk for mk in self.matches if mk[0] == name]:
            self._undo(mk, held)

    def _reindex(self) -> None:
        self._slots = {}
        self._field_types = set()
        self._wide = False
        self._state_sensitive = False
        for t in self.templates.values():
            for matcher in t.entities.values():
                # Deduced states only move resources; a test of an alarm's state reads
                # its severity, which the engine never changes.
                if "state" in matcher.fields and matcher.category != ALARM:
                    self._state_sensitive = True
                if matcher.fields and matcher.category != ALARM:
                    self._field_types.add(matcher.type)
            for s in t.scenarios:
                for c in s.clauses:
                    if any(
                        n.source not in c.entities or n.target not in c.entities
                        for n in c.negatives
                    ):
                        self._wide = True
                    if not c.relations:  # a lone entity: being there is a match
                        self._field_types.add(t.entities[c.entities[0]].type)
                    for e in c.entities:
                        self._slots.setdefault(_slot_key(t, c, e), []).append((t, s, c, e))

    def evaluate_all(self) -> Plan:
        """Evaluate every template over the whole graph (at start, and for the tests)."""
        self._evaluate_all(list(self.templates.values()))
        return self.run()

    def _evaluate_all(self, templates: list[Template]) -> None:
        # Each match is found once, from one anchor per clause: an alarm entity where
        # there is one (alarms are few), else an entity of a fixed type.
        anchors: dict[str | None, list[Slot]] = {}
        alarm_anchors: list[Slot] = []
        for t in templates:
            for s in t.scenarios:
                for c in s.clauses:
                    e = min(c.entities, key=partial(_rank, t))
                    if t.entities[e].category == ALARM:
                        alarm_anchors.append((t, s, c, e))
                    else:
                        anchors.setdefault(t.entities[e].type, []).append((t, s, c, e))
        untyped = anchors.get(None, [])
        # Search the whole graph first, act after: actions add vertices.
        found: dict[MatchKey, tuple[Template, Scenario, Clause, Binding]] = {}
        for v in self.graph.each_vertex():
            if v.placeholder:
                continue
            slots = alarm_anchors if v.category == ALARM else anchors.get(v.type, [])
            for t, s, c, e in [*slots, *untyped]:
                if t.entities[e](v):
                    for b in self._search(t, c, e, v):
                        mk = (t.name, s.index, c.index, tuple(b[x].key for x in c.entities))
                        found[mk] = (t, s, c, b)
        for mk, (t, s, c, b) in found.items():
            if mk not in self.matches:
                self._apply(mk, t, s, c, b)

    # -- evaluation ---------------------------------------------------------------------

    def run(self, owners_first: bool = False, keep_deferred: bool = False) -> Plan:
        """Re-evaluate what changed until nothing more does; returns what to do outside.

        With `owners_first`, stop as soon as a round has decided whom to notify or what
        to mark down, and leave the rest (the graph's own deductions: alarms, states,
        causes, and whatever follows from them) for the next call: the caller starts
        the notifications first and calls `run()` again to finish. With `keep_deferred`,
        what was held back that way stays held (for changes that arrive meanwhile, so
        that they do not finish a fault's work while its owners are being told).
        """
        self._owners_first = owners_first
        rounds = 0
        while True:
            if self._deferred and not keep_deferred:
                self._apply_deferred()
            if not self.dirty:
                break
            rounds += 1
            if rounds > self.max_rounds:
                log.error("rule evaluation did not settle", extra={"left": len(self.dirty)})
                self.dirty.clear()
                break
            batch, self.dirty = self.dirty, set()
            if self._wide:
                # A NOT over an entity left unbound ("no alarm [on] this server") depends
                # on the neighbours of what it binds: a change to one reaches them.
                near = [n.key for k in batch for n in self.graph.neighbors(k, direction="both")]
                batch.update(near)
            for key in batch:
                self._reevaluate(key)
            if owners_first and (self._plan.notify or self._plan.mark_down):
                break
        self._owners_first = False
        plan, self._plan = self._plan, Plan()
        return plan

    @property
    def settled(self) -> bool:
        return not (self.dirty or self._deferred)

    def _apply_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        self._acting = True
        try:
            for match, t, action, alarm_entity in deferred:
                # A match undone meanwhile has nothing left to apply.
                if self.matches.get(match.key) is match:
                    self._do(t, action, match.binding, match, alarm_entity)
        finally:
            self._acting = False

    def _reevaluate(self, key: str) -> None:
        v = self.graph.get(key)
        found: dict[MatchKey, tuple[Template, Scenario, Clause, Binding]] = {}
        if v is not None and not v.placeholder:
            for slots in self._candidates(v):
                for t, s, c, e in slots:
                    if not t.entities[e](v):
                        continue
                    for b in self._search(t, c, e, v):
                        mk = (t.name, s.index, c.index, tuple(b[x].key for x in c.entities))
                        found[mk] = (t, s, c, b)
        for mk in [mk for mk in self.by_vertex.get(key, ()) if mk not in found]:
            self._undo(mk)
        for mk, (t, s, c, b) in found.items():
            if mk not in self.matches:
                self._apply(mk, t, s, c, b)

    def _candidates(self, v: Vertex) -> list[list[Slot]]:
        groups = [self._slots.get(v.type, []), self._slots.get(None, [])]
        if v.category == ALARM:
            groups.append(self._slots.get("@", []))
            for on_type in {n.type for n in self.graph.neighbors(v.key, ON)}:
                groups.append(self._slots.get("@" + on_type, []))
        return groups

    def _search(self, t: Template, c: Clause, anchor: str, v: Vertex) -> Iterator[Binding]:
        binding = {anchor: v}
        yield from self._extend(t, c, c.plans[anchor], 0, binding)

    def _extend(
        self, t: Template, c: Clause, steps: tuple[Any, ...], i: int, b: Binding
    ) -> Iterator[Binding]:
        if i == len(steps):
            if self._negatives_hold(t, c, b):
                yield dict(b)
            return
        step = steps[i]
        rel = step.relation
        if step.check:
            if self.graph.has_edge(b[rel.source].key, b[rel.target].key, rel.label):
                yield from self._extend(t, c, steps, i + 1, b)
            return
        direction: Direction = "out" if step.forward else "in"
        frm, to = (rel.source, rel.target) if step.forward else (rel.target, rel.source)
        matcher = t.entities[to]
        used = {x.key for x in b.values()}
        for n in self.graph.neighbors(b[frm].key, rel.label, direction, type=matcher.type):
            if n.key in used or not matcher(n):
                continue
            b[to] = n
            yield from self._extend(t, c, steps, i + 1, b)
            del b[to]

    def _negatives_hold(self, t: Template, c: Clause, b: Binding) -> bool:
        for rel in c.negatives:
            s, d = b.get(rel.source), b.get(rel.target)
            if s is not None and d is not None:
                if self.graph.has_edge(s.key, d.key, rel.label):
                    return False
            elif s is not None:
                m = t.entities[rel.target]
                if any(m(n) for n in self.graph.neighbors(s.key, rel.label, "out", type=m.type)):
                    return False
            elif d is not None:
                m = t.entities[rel.source]
                if any(m(n) for n in self.graph.neighbors(d.key, rel.label, "in", type=m.type)):
                    return False
        return True

    # -- actions ------------------------------------------------------------------------

    def _apply(self, mk: MatchKey, t: Template, s: Scenario, c: Clause, b: Binding) -> None:
        keys = {e: v.key for e, v in b.items()}
        match = Match(mk, keys, [])
        self.matches[mk] = match
        by_vertex = self.by_vertex
        for vk in keys.values():  # bindings are injective: no key twice
            owners = by_vertex.get(vk)
            if owners is None:
                by_vertex[vk] = {mk}
            else:
                owners.add(mk)
        alarm_entity = c.alarm_entity
        self._acting = True
        try:
            if self._owners_first:
                for action in s.actions:
                    if isinstance(action, GRAPH_ACTIONS):
                        self._deferred.append((match, t, action, alarm_entity))
                    else:
                        self._do(t, action, keys, match, alarm_entity)
            else:
                for action in s.actions:
                    self._do(t, action, keys, match, alarm_entity)
        finally:
            self._acting = False

    def _do(
        self, t: Template, action: Any, keys: dict[str, str], match: Match, alarm_entity: str | None
    ) -> None:
        if isinstance(action, RaiseAlarm):
            target = keys[action.target]
            key = deduced_key(action.name, target)
            match.tokens.append(("alarm", key))
            if self._count(self.alarms, key, +1) == 1:
                alarm = self.graph.upsert(
                    ALARM,
                    "alarm",
                    key.removeprefix("alarm:"),
                    name=action.name,
                    raw_state=action.severity,
                    props={
                        "deduced": True,
                        "template": t.name,
                        "resource": target,
                        "caused_by": keys.get(action.causing_alarm or ""),
                    },
                )
                self.graph.link(key, target, ON)
                self.history.record("raised", alarm, target, keys.get(action.causing_alarm or ""))
                self.dirty.add(key)
            if action.causing_alarm is not None:
                self._cause(keys[action.causing_alarm], key, match)
        elif isinstance(action, AddCausalRelationship):
            self._cause(keys[action.source], keys[action.target], match)
        elif isinstance(action, SetState):
            target = keys[action.target]
            match.tokens.append(("state", (target, action.state)))
            counts = self.states.setdefault(target, {})
            counts[action.state] = counts.get(action.state, 0) + 1
            self._restate(target)
        elif isinstance(action, Notify):
            cause = keys[action.cause] if action.cause else keys.get(alarm_entity or "")
            if self._once(("notify", keys[action.target], action.event_type, action.state), match):
                self._plan.notify.append(
                    NotifyEffect(
                        keys[action.target], action.event_type, action.state, cause, t.name
                    )
                )
        elif isinstance(action, MarkDown):
            if self._once(("mark_down", keys[action.target]), match):
                self._plan.mark_down.append(keys[action.target])
        elif isinstance(action, RunWorkflow):
            wf_target = keys[action.target] if action.target else None
            if self._once(("workflow", action.workflow, wf_target or match.key), match):
                self._plan.workflows.append(
                    WorkflowEffect(
                        action.workflow, wf_target, dict(action.params), dict(keys), t.name
                    )
                )

    @staticmethod
    def _count(counts: dict[Any, int], key: Any, delta: int) -> int:
        n = counts.get(key, 0) + delta
        if n:
            counts[key] = n
        else:
            counts.pop(key, None)
        return n

    def _once(self, key: tuple[Any, ...], match: Match) -> bool:
        match.tokens.append(("once", key))
        return self._count(self.once, key, +1) == 1

    def _cause(self, source: str, target: str, match: Match) -> None:
        match.tokens.append(("cause", (source, target)))
        if self._count(self.causes, (source, target), +1) == 1:
            self.graph.link(source, target, CAUSES)
            self.dirty.add(target)

    def _restate(self, key: str) -> None:
        vertex = self.graph.get(key)
        if vertex is None:
            return
        counts = self.states.get(key)
        best = max(counts, key=lambda st: priority(RESOURCE, st)) if counts else None
        if best != vertex.deduced_state:
            vertex.deduced_state = best
            if self._state_sensitive:
                self.dirty.add(key)

    def _undo(self, mk: MatchKey, held: list[Any] | None = None) -> None:
        match = self.matches.pop(mk)
        for vk in set(match.binding.values()):
            owners = self.by_vertex.get(vk)
            if owners is not None:
                owners.discard(mk)
                if not owners:
                    del self.by_vertex[vk]
        self._acting = True
        try:
            for kind, value in reversed(match.tokens):
                if kind == "alarm":
                    if self._count(self.alarms, value, -1) == 0:
                        self._retract(value)
                elif kind == "cause":
                    if self._count(self.causes, value, -1) == 0:
                        self.graph.unlink(value[0], value[1], CAUSES)
                        self.dirty.add(value[1])
                elif kind == "state":
                    target, state = value
                    counts = self.states.get(target, {})
                    self._count(counts, state, -1)
                    if not counts:
                        self.states.pop(target, None)
                    self._restate(target)
                elif held is not None:
                    held.append(value)
                else:
                    self._count(self.once, value, -1)
        finally:
            self._acting = False

    def _retract(self, key: str) -> None:
        alarm = self.graph.get(key)
        if alarm is None:
            return
        props = alarm.props or {}
        self.history.record("cleared", alarm, props.get("resource"), props.get("caused_by"))
        neighbors = (
            [n.key for n in self.graph.neighbors(key, direction="both")] if self._wide else []
        )
        self.graph.remove(key)
        # Matches through the alarm go when it is re-evaluated (it is gone by then).
        self.dirty.add(key)
        self.dirty.update(neighbors)

    # -- for the API and the tests ------------------------------------------------------

    def marked(self) -> set[str]:
        """Vertices some rule currently wants marked down."""
        return {key[1] for key in self.once if key[0] == "mark_down"}

    def deduced(self) -> list[str]:
        return sorted(self.alarms)

    def snapshot(self) -> dict[str, Any]:
        """Everything the engine deduced, in a form two engines can be compared by."""
        alarms = {}
        for key in self.alarms:
            v = self.graph.get(key)
            if v is not None:
                alarms[key] = (v.name, v.raw_state, (v.props or {}).get("resource"))
        return {
            "matches": sorted(self.matches),
            "alarms": alarms,
            "causes": sorted(self.causes),
            "states": {
                k: max(c, key=lambda st: priority(RESOURCE, st))
                for k, c in self.states.items()
                if c
            },
            "once": sorted(self.once, key=repr),
        }
