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
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from opendoctor.inspector.graph import ON, Direction, TopologyGraph, Vertex
from opendoctor.inspector.graph.history import AlarmHistory
from opendoctor.inspector.graph.states import Category
from opendoctor.inspector.templates.deductions import Binding, Deductions, Match, MatchKey, Plan
from opendoctor.inspector.templates.model import (
    Clause,
    Scenario,
    Template,
)
from opendoctor.inspector.templates.paths import Reach, holds, walk

log = logging.getLogger(__name__)

ALARM = Category.ALARM.value

Slot = tuple[Template, Scenario, Clause, str]


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


class Engine(Deductions):
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
        # Who acts on a match, where several processes deduce the same (`FaultGraph.acts`).
        self.acts: Callable[[Iterable[str]], bool] | None = None
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
        # Chains ([label*]) and ALL(/ANY( reach past the entities a match binds: a
        # change there must reach the matches it can make or break.
        self._reach = Reach()
        self._near: set[str] = set()  # next to vertices gone since the last round

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
        elif self._reach:
            # Gone with its edges: reach past it from its neighbours. They need a look
            # of their own unless it was an alarm no chain runs through (the matches
            # that bound it are found through it).
            self._near.update(neighbors)
            if not key.startswith("alarm:") or self._reach.through_alarms:
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
        self._reach = Reach()
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
                    self._reach.add(t, c)

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
            if self._reach:
                # Past what changed, and past what is gone from next to what remains.
                gone_from, self._near = self._near, set()
                batch |= self._reach(self.graph, batch | gone_from)
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
            if self._negatives_hold(t, c, b) and all(
                holds(self.graph, partial(self._search, t), t, q, b[q.bound]) != q.negated
                for q in c.quantifiers
            ):
                yield dict(b)
            return
        step = steps[i]
        rel = step.relation
        if step.check:
            source, target = b[rel.source].key, b[rel.target].key
            if rel.path:
                through = t.entities[rel.source]
                linked = any(
                    n.key == target for n in walk(self.graph, source, rel.label, "out", through)
                )
            else:
                linked = self.graph.has_edge(source, target, rel.label)
            if linked:
                yield from self._extend(t, c, steps, i + 1, b)
            return
        direction: Direction = "out" if step.forward else "in"
        frm, to = (rel.source, rel.target) if step.forward else (rel.target, rel.source)
        matcher = t.entities[to]
        used = {x.key for x in b.values()}
        if rel.path:
            # A chain's vertices, but its last, are like its first (switches down to a host).
            through = t.entities[rel.source]
            found = walk(self.graph, b[frm].key, rel.label, direction, through)
        else:
            found = self.graph.neighbors(b[frm].key, rel.label, direction, type=matcher.type)
        for n in found:
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
