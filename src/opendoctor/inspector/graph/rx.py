"""The production entity graph: `TopologyGraph` over rustworkx, compact and fast at
neighbour lookups with a million vertices. `memory.MemoryGraph` is its naive twin that
the property tests check it against."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import rustworkx as rx

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


class RxGraph:
    """`TopologyGraph` over a `rustworkx.PyDiGraph`; node payloads are `Vertex`, edge payloads
    the label string (labels are interned by the caller's literals, so edges cost no string)."""

    def __init__(self) -> None:
        self._g: rx.PyDiGraph[Vertex, str] = rx.PyDiGraph(multigraph=True)
        self._index: dict[str, int] = {}
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
        idx = self._index.get(key)
        if idx is None:
            fresh = True
            vertex = new_vertex(category, type, id, name, project, raw_state, props)
            self._index[vertex.key] = self._g.add_node(vertex)
        else:
            vertex = self._g[idx]
            fresh = vertex.placeholder
            apply_fields(vertex, category, name, project, raw_state, props, time.time())
        if self.listener is not None:
            self.listener.vertex_changed(key, fresh)
        if self.observers:
            self.observers.vertex_changed(key, fresh)
        return vertex

    def get(self, key: str) -> Vertex | None:
        idx = self._index.get(key)
        return None if idx is None else self._g[idx]

    def remove(self, key: str) -> bool:
        idx = self._index.get(key)
        if idx is None:
            return False
        near: list[str] = []
        if self.listener is not None or self.observers:
            near = [self._g[i].key for i in set(self._adjacent(idx, None, "both")) if i != idx]
        if self.observers:
            self.observers.vertex_removed(key, near)
        # rustworkx hands the freed index to the next add_node, so the key must go first.
        del self._index[key]
        if self.listener is not None:
            self.listener.vertex_removed(key, near)
        self._g.remove_node(idx)
        return True

    def _ensure(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = self._g.add_node(placeholder_vertex(key))
        return idx

    def link(self, source_key: str, target_key: str, label: str) -> None:
        a = self._ensure(source_key)
        b = self._ensure(target_key)
        if self._g.has_edge(a, b) and label in self._g.get_all_edge_data(a, b):
            return
        self._g.add_edge(a, b, label)
        if self.listener is not None:
            self.listener.edge_changed(source_key, target_key)
        if self.observers:
            self.observers.edge_changed(source_key, target_key)

    def unlink(self, source_key: str, target_key: str, label: str | None = None) -> bool:
        a = self._index.get(source_key)
        b = self._index.get(target_key)
        if a is None or b is None or not self._g.has_edge(a, b):
            return False
        doomed = [
            e
            for e in self._g.edge_indices_from_endpoints(a, b)
            if label is None or self._g.get_edge_data_by_index(e) == label
        ]
        for e in doomed:
            self._g.remove_edge_from_index(e)
        if doomed:
            if self.listener is not None:
                self.listener.edge_changed(source_key, target_key)
            if self.observers:
                self.observers.edge_changed(source_key, target_key)
        return bool(doomed)

    def has_edge(self, source_key: str, target_key: str, label: str) -> bool:
        a = self._index.get(source_key)
        b = self._index.get(target_key)
        if a is None or b is None or not self._g.has_edge(a, b):
            return False
        return label in self._g.get_all_edge_data(a, b)

    def labels(self, source_key: str, target_key: str) -> list[str]:
        a = self._index.get(source_key)
        b = self._index.get(target_key)
        if a is None or b is None or not self._g.has_edge(a, b):
            return []
        return list(self._g.get_all_edge_data(a, b))

    def _adjacent(self, idx: int, label: str | None, direction: Direction) -> Iterable[int]:
        g = self._g
        if direction != "in":
            for _, t, lab in g.out_edges(idx):
                if label is None or lab == label:
                    yield t
        if direction != "out":
            for s, _, lab in g.in_edges(idx):
                if label is None or lab == label:
                    yield s

    def neighbors(
        self,
        key: str,
        label: str | None = None,
        direction: Direction = "out",
        type: str | None = None,
    ) -> list[Vertex]:
        idx = self._index.get(key)
        if idx is None:
            return []
        g = self._g
        # dict, not set: keeps the library's order while dropping repeats (two labels, or
        # a vertex both upstream and downstream).
        seen = dict.fromkeys(self._adjacent(idx, label, direction))
        found = [g[i] for i in seen]
        if type is not None:
            found = [v for v in found if v.type == type]
        return found

    def _edge(self, s: int, t: int, label: str) -> Edge:
        return Edge(self._g[s].key, self._g[t].key, label)

    def edges(self, key: str) -> list[Edge]:
        idx = self._index.get(key)
        if idx is None:
            return []
        g = self._g
        out = [self._edge(s, t, lab) for s, t, lab in g.out_edges(idx)]
        # A self-loop is already listed among the out-edges.
        out.extend(self._edge(s, t, lab) for s, t, lab in g.in_edges(idx) if s != idx)
        return out

    def subgraph(self, root_key: str, depth: int) -> tuple[list[Vertex], list[Edge]]:
        root = self._index.get(root_key)
        if root is None:
            return [], []
        levels = {root: 0}
        queue = deque([root])
        while queue:
            i = queue.popleft()
            if levels[i] >= depth:
                continue
            for j in self._adjacent(i, None, "both"):
                if j not in levels:
                    levels[j] = levels[i] + 1
                    queue.append(j)
        g = self._g
        edges = [
            self._edge(s, t, lab) for i in levels for s, t, lab in g.out_edges(i) if t in levels
        ]
        return [g[i] for i in levels], edges

    def _reach(self, start: int, direction: Direction) -> list[Vertex]:
        seen = {start}
        order: list[int] = []
        queue = deque([start])
        while queue:
            i = queue.popleft()
            for j in self._adjacent(i, CAUSES, direction):
                if j not in seen:
                    seen.add(j)
                    order.append(j)
                    queue.append(j)
        return [self._g[i] for i in order]

    def causal_chain(self, key: str) -> tuple[list[Vertex], list[Vertex]]:
        idx = self._index.get(key)
        if idx is None:
            return [], []
        return self._reach(idx, "in"), self._reach(idx, "out")

    def __len__(self) -> int:
        return len(self._index)

    def count_edges(self) -> int:
        return self._g.num_edges()

    def vertices(self) -> list[Vertex]:
        return list(self._g.nodes())

    def each_vertex(self) -> Iterator[Vertex]:
        g = self._g
        for idx in self._index.values():
            yield g[idx]

    def all_edges(self) -> list[Edge]:
        g = self._g
        return [Edge(g[s].key, g[t].key, label) for s, t, label in g.weighted_edge_list()]
