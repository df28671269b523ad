"""A plain-dict `TopologyGraph`: the reference model that RxGraph is checked against.

Slow and simple on purpose: the property tests run both on random operation sequences
and compare every answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from opendoctor.inspector.graph.model import (
    CAUSES,
    Direction,
    Edge,
    GraphListener,
    Observers,
    Vertex,
    apply_fields,
    make_key,
    new_vertex,
    placeholder_vertex,
)


class MemoryGraph:
    """Plain-dict `TopologyGraph`: the reference model for RxGraph in property tests."""

    def __init__(self) -> None:
        self._v: dict[str, Vertex] = {}
        self._out: dict[str, set[tuple[str, str]]] = {}
        self._in: dict[str, set[tuple[str, str]]] = {}
        self.listener: GraphListener | None = None
        self.observers = Observers()

    def upsert(
        self,
        category: str,
        type: str,
        id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        raw_state: str | None = None,
        props: dict[str, Any] | None = None,
    ) -> Vertex:
        key = make_key(type, id)
        vertex = self._v.get(key)
        fresh = vertex is None or vertex.placeholder
        if vertex is None:
            vertex = self._v[key] = new_vertex(category, type, id, name, project, raw_state, props)
            self._out[key] = set()
            self._in[key] = set()
        else:
            apply_fields(vertex, category, name, project, raw_state, props, time.time())
        if self.listener is not None:
            self.listener.vertex_changed(key, fresh)
        if self.observers:
            self.observers.vertex_changed(key, fresh)
        return vertex

    def get(self, key: str) -> Vertex | None:
        return self._v.get(key)

    def remove(self, key: str) -> bool:
        if key not in self._v:
            return False
        if self.listener is not None or self.observers:
            near = [k for k in self._adjacent(key, None, "both") if k != key]
            if self.observers:  # first, as RxGraph does: while the vertex is there to read
                self.observers.vertex_removed(key, near)
            if self.listener is not None:
                self.listener.vertex_removed(key, near)
        del self._v[key]
        for target, label in self._out.pop(key):
            self._in[target].discard((key, label))
        for source, label in self._in.pop(key):
            if source != key:
                self._out[source].discard((key, label))
        return True

    def _ensure(self, key: str) -> None:
        if key not in self._v:
            self._v[key] = placeholder_vertex(key)
            self._out[key] = set()
            self._in[key] = set()

    def link(self, source_key: str, target_key: str, label: str) -> None:
        self._ensure(source_key)
        self._ensure(target_key)
        if (target_key, label) in self._out[source_key]:
            return
        self._out[source_key].add((target_key, label))
        self._in[target_key].add((source_key, label))
        if self.listener is not None:
            self.listener.edge_changed(source_key, target_key)
        if self.observers:
            self.observers.edge_changed(source_key, target_key)

    def unlink(self, source_key: str, target_key: str, label: str | None = None) -> bool:
        out = self._out.get(source_key)
        if out is None or target_key not in self._v:
            return False
        doomed = {(t, lab) for t, lab in out if t == target_key and label in (None, lab)}
        out -= doomed
        self._in[target_key] -= {(source_key, lab) for _, lab in doomed}
        if doomed:
            if self.listener is not None:
                self.listener.edge_changed(source_key, target_key)
            if self.observers:
                self.observers.edge_changed(source_key, target_key)
        return bool(doomed)

    def has_edge(self, source_key: str, target_key: str, label: str) -> bool:
        return (target_key, label) in self._out.get(source_key, ())

    def labels(self, source_key: str, target_key: str) -> list[str]:
        return [lab for t, lab in self._out.get(source_key, ()) if t == target_key]

    def _adjacent(self, key: str, label: str | None, direction: Direction) -> list[str]:
        pairs: list[tuple[str, str]] = []
        if direction != "in":
            pairs.extend(self._out[key])
        if direction != "out":
            pairs.extend(self._in[key])
        return list(dict.fromkeys(k for k, lab in pairs if label in (None, lab)))

    def neighbors(
        self,
        key: str,
        label: str | None = None,
        direction: Direction = "out",
        type: str | None = None,
    ) -> list[Vertex]:
        if key not in self._v:
            return []
        found = [self._v[k] for k in self._adjacent(key, label, direction)]
        return [v for v in found if type is None or v.type == type]

    def edges(self, key: str) -> list[Edge]:
        if key not in self._v:
            return []
        out = [Edge(key, t, lab) for t, lab in self._out[key]]
        return out + [Edge(s, key, lab) for s, lab in self._in[key] if s != key]

    def subgraph(self, root_key: str, depth: int) -> tuple[list[Vertex], list[Edge]]:
        if root_key not in self._v:
            return [], []
        found = {root_key: None}  # ordered, so the root comes first as in RxGraph
        frontier = [root_key]
        for _ in range(depth):
            frontier = [
                n for k in frontier for n in self._adjacent(k, None, "both") if n not in found
            ]
            found.update(dict.fromkeys(frontier))
        edges = [Edge(k, t, lab) for k in found for t, lab in self._out[k] if t in found]
        return [self._v[k] for k in found], edges

    def _closure(self, key: str, direction: Direction) -> list[Vertex]:
        found: dict[str, None] = {}
        stack = [key]
        while stack:
            for n in self._adjacent(stack.pop(), CAUSES, direction):
                if n != key and n not in found:
                    found[n] = None
                    stack.append(n)
        return [self._v[k] for k in found]

    def causal_chain(self, key: str) -> tuple[list[Vertex], list[Vertex]]:
        if key not in self._v:
            return [], []
        return self._closure(key, "in"), self._closure(key, "out")

    def __len__(self) -> int:
        return len(self._v)

    def count_edges(self) -> int:
        return sum(len(out) for out in self._out.values())

    def vertices(self) -> list[Vertex]:
        return list(self._v.values())

    def each_vertex(self) -> Iterator[Vertex]:
        yield from self._v.values()

    def all_edges(self) -> list[Edge]:
        return [Edge(k, t, label) for k, out in self._out.items() for t, label in out]
