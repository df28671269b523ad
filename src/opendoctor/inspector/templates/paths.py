"""Chains (`a [label*] b`) and quantifiers (`ALL(...)`, `ANY(...)`) over the graph.

Both look past the entities a match binds: a chain through switches between a spine
and a host, the servers of a host that ALL( asks about. `walk` and `holds` evaluate
them for the engine's search; `Reach` tells the engine which vertices a change could
make or break a match at, since the change may be several hops from any bound vertex.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from opendoctor.inspector.graph import ON, Direction, TopologyGraph, Vertex
from opendoctor.inspector.graph.states import Category
from opendoctor.inspector.templates.matchers import Matcher
from opendoctor.inspector.templates.model import Clause, Quantifier, Template, clauses_within

# The engine's search: the bindings of a clause that start from `anchor` at a vertex.
Search = Callable[[Clause, str, Vertex], Iterator[dict[str, Vertex]]]


def walk(
    graph: TopologyGraph,
    start: str,
    label: str,
    direction: Direction,
    through: Callable[[Vertex], bool],
) -> list[Vertex]:
    """Every vertex a chain of `label` edges reaches from `start`, going on only through
    vertices that match `through` (each once, however many ways lead there)."""
    seen = {start}
    reached: list[Vertex] = []
    todo = [start]
    while todo:
        for n in graph.neighbors(todo.pop(), label, direction):
            if n.key in seen:
                continue
            seen.add(n.key)
            reached.append(n)
            if through(n):
                todo.append(n.key)
    return reached


def _related(graph: TopologyGraph, t: Template, q: Quantifier, key: str) -> list[Vertex]:
    m = t.entities[q.each]
    return [n for n in graph.neighbors(key, q.label, q.toward_each, m.type) if m(n)]


def holds(graph: TopologyGraph, search: Search, t: Template, q: Quantifier, bound: Vertex) -> bool:
    """Whether ALL( / ANY( holds for the vertex the clause bound (before any NOT).

    Over a chain, ALL asks whether every way to the bound vertex is blocked: each chain
    of related vertices, followed until one has nothing more related to it, must pass a
    vertex that satisfies the inner condition. A vertex that only leads back to vertices
    already seen (a ring, a peer link) is no way out. ALL needs at least one related
    vertex: a host with no switch is not cut off."""

    def satisfies(v: Vertex) -> bool:
        return any(next(search(inner, q.each, v), None) is not None for inner in q.inner)

    first = _related(graph, t, q, bound.key)
    if not q.path:
        test = all if q.every else any
        return bool(first) and test(satisfies(v) for v in first)
    seen = {bound.key} | {v.key for v in first}
    todo = list(first)
    while todo:
        v = todo.pop()
        if satisfies(v):
            if q.every:
                continue  # this way is blocked here
            return True
        further = _related(graph, t, q, v.key)
        if q.every and not further:
            return False  # a way up through vertices that all pass
        for n in further:
            if n.key not in seen:
                seen.add(n.key)
                todo.append(n)
    return q.every and bool(first)


def _along(
    graph: TopologyGraph, start: str, label: str, direction: Direction, kind: str | None
) -> set[str]:
    """Keys a chain of `label` edges reaches from `start` through vertices of type `kind`."""
    reached = walk(graph, start, label, direction, lambda n: kind is None or n.type == kind)
    return {n.key for n in reached}


def _kind(m: Matcher) -> str | None:
    """The vertex type an entity can stand for (None: any)."""
    return "alarm" if m.category == Category.ALARM else m.type


@dataclass(frozen=True, slots=True)
class _Chain:
    label: str
    kind: str | None  # the type of the vertices it goes through


@dataclass(frozen=True, slots=True)
class _Asked:
    """What a quantifier reaches past its bound vertex, as far as changes go: from a
    vertex its inner condition could bind, `hops` steps over `labels` to the related
    vertex, then along `label` to the vertices the quantifier is asked about."""

    labels: frozenset[str]
    hops: int
    kinds: frozenset[str] | None  # types the inner condition binds (None: any)
    label: str
    path: bool
    toward_bound: Direction
    each: str | None  # the type of the related vertices
    # The types of resource the inner condition's alarms are [on] (None: any, or some
    # alarm is bound otherwise): an alarm on anything else cannot matter.
    alarms_on: frozenset[str] | None


def _alarms_on(t: Template, inner: Iterable[Clause]) -> frozenset[str] | None:
    on: set[str] = set()
    for c in inner:
        for e in c.entities:
            if t.entities[e].category != Category.ALARM:
                continue
            targets = [r.target for r in c.relations if r.source == e and r.label == ON]
            kinds = [_kind(t.entities[x]) for x in targets]
            if not kinds or None in kinds:
                return None
            on.update(k for k in kinds if k is not None)
    return frozenset(on)


def alarm_on(v: Vertex) -> str | None:
    """The type of the resource an alarm is on, as faults' and deduced alarms' props
    say (None: an alarm that does not say, which might be on anything)."""
    resource = (v.props or {}).get("resource")
    return resource.partition(":")[0] if isinstance(resource, str) else None


@dataclass(slots=True)
class Reach:
    """The vertices whose matches a change at some vertices may make or break through
    a chain or a quantifier (the engine re-evaluates them too). Built once per set of
    templates; the same chain or quantifier in several scenarios is followed once."""

    chains: set[_Chain] = field(default_factory=set)
    asked: set[_Asked] = field(default_factory=set)

    def add(self, t: Template, clause: Clause) -> None:
        for c in clauses_within(clause):
            for rel in c.relations:
                if rel.path:
                    self.chains.add(_Chain(rel.label, _kind(t.entities[rel.source])))
        for q in clause.quantifiers:
            rels = [r for c in q.inner for r in (*c.relations, *c.negatives)]
            kinds = {_kind(t.entities[e]) for c in q.inner for e in c.entities}
            each = _kind(t.entities[q.each])
            typed = {k for k in kinds if k is not None}
            if each is not None and len(typed) == len(kinds):
                bound_kinds: frozenset[str] | None = frozenset({*typed, each})
            else:
                bound_kinds = None
            self.asked.add(
                _Asked(
                    frozenset(r.label for r in rels),
                    max((len(c.relations) + len(c.negatives) for c in q.inner), default=0),
                    bound_kinds,
                    q.label,
                    q.path,
                    q.toward_bound,
                    each,
                    _alarms_on(t, q.inner),
                )
            )

    def __bool__(self) -> bool:
        return bool(self.chains or self.asked)

    @property
    def through_alarms(self) -> bool:
        """Whether some chain may run through alarms (over `causes`, say)."""
        return any(chain.kind in (None, "alarm") for chain in self.chains)

    def about(self, alarm: Vertex) -> bool:
        """Whether a change to this alarm can matter past what binds it."""
        if self.through_alarms:
            return True
        on = alarm_on(alarm)
        for q in self.asked:
            if q.kinds is None:
                return True
            if "alarm" in q.kinds and (q.alarms_on is None or on is None or on in q.alarms_on):
                return True
        return False

    def __call__(self, graph: TopologyGraph, keys: Iterable[str]) -> set[str]:
        out: set[str] = set()
        near_cache: dict[tuple[str, frozenset[str], int], dict[str, str]] = {}
        for key in keys:
            v = graph.get(key)
            if v is None:  # gone: its neighbours were noted, and are followed instead
                continue
            for chain in self.chains:
                # A chain runs from its source's kind down to its end: what a change on
                # it can break lies below (the end of every match through it).
                if chain.kind is None or v.type == chain.kind:
                    out |= _along(graph, key, chain.label, "out", chain.kind)
            on = alarm_on(v) if v.category == Category.ALARM else None
            for q in self.asked:
                if q.kinds is not None and v.type not in q.kinds:
                    continue
                if on is not None and q.alarms_on is not None and on not in q.alarms_on:
                    continue
                cached = (key, q.labels, q.hops)
                near = near_cache.get(cached)
                if near is None:
                    near = near_cache[cached] = _within(graph, v, q.labels, q.hops)
                for k, kind in near.items():
                    if q.each is not None and kind != q.each:
                        continue  # not a vertex the quantifier relates
                    if q.path:
                        out |= _along(graph, k, q.label, q.toward_bound, q.each)
                    else:
                        out.update(n.key for n in graph.neighbors(k, q.label, q.toward_bound))
        return out


def _within(graph: TopologyGraph, v: Vertex, labels: frozenset[str], hops: int) -> dict[str, str]:
    """`v` and what lies up to `hops` steps from it over `labels` (key -> type): where
    the related vertex could be if `v` is one that the inner condition binds."""
    near = {v.key: v.type}
    frontier = [v.key]
    for _ in range(hops):
        found = [n for k in frontier for label in labels for n in graph.neighbors(k, label, "both")]
        frontier = [n.key for n in found if n.key not in near]
        near.update((n.key, n.type) for n in found)
    return near
