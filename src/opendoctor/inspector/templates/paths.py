"""Chains (`a [label*] b`) and quantifiers (`ALL(...)`, `ANY(...)`) over the graph.

Both look past the entities a match binds: a chain through switches between a spine
and a host, the servers of a host that ALL( asks about. `walk` and `holds` evaluate
them for the engine's search; `reach` tells the engine which vertices a change could
make or break a match at, since the change may be several hops from any bound vertex.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from opendoctor.inspector.graph import Direction, TopologyGraph, Vertex
from opendoctor.inspector.templates.matchers import Matcher
from opendoctor.inspector.templates.model import Clause, Quantifier, Template

# The engine's search: the bindings of a clause that start from `anchor` at a vertex.
Search = Callable[[Clause, str, Vertex], Iterator[dict[str, Vertex]]]


def walk(
    graph: TopologyGraph, start: str, label: str, direction: Direction, through: Matcher
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
    seen = {start}
    todo = [start]
    while todo:
        for n in graph.neighbors(todo.pop(), label, direction):
            if n.key not in seen:
                seen.add(n.key)
                if kind is None or n.type == kind:
                    todo.append(n.key)
    seen.discard(start)
    return seen


def reach(
    graph: TopologyGraph,
    chains: Iterable[tuple[str, str | None]],
    quantifiers: Iterable[tuple[Quantifier, Matcher]],
    keys: Iterable[str],
) -> set[str]:
    """The vertices whose matches a change at `keys` may make or break: along each
    chain's label both ways (through the type it chains through), and from whatever a
    quantifier's inner condition could bind to the vertices the quantifier is asked about.
    """
    chains, quantifiers = list(chains), list(quantifiers)
    out: set[str] = set()
    for key in keys:
        for label, kind in chains:
            out |= _along(graph, key, label, "in", kind) | _along(graph, key, label, "out", kind)
        for q, each in quantifiers:
            near = _within(graph, key, q.inner)
            for k in near:
                if q.path:
                    out |= _along(graph, k, q.label, q.toward_bound, each.type)
                else:
                    out.update(n.key for n in graph.neighbors(k, q.label, q.toward_bound))
    return out


def _within(graph: TopologyGraph, key: str, inner: Iterable[Clause]) -> set[str]:
    """`key` and what lies as many hops from it as the inner condition has relations,
    over its labels: where the related vertex could be if `key` is one it binds."""
    inner = list(inner)
    labels = {rel.label for c in inner for rel in (*c.relations, *c.negatives)}
    hops = max((len(c.relations) + len(c.negatives) for c in inner), default=0)
    near = frontier = {key}
    for _ in range(hops):
        frontier = {
            n.key for k in frontier for label in labels for n in graph.neighbors(k, label, "both")
        } - near
        near = near | frontier
    return near
