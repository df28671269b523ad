"""RxGraph against the naive MemoryGraph on random operation sequences."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opendoctor.inspector.graph import Direction, RxGraph, TopologyGraph, Vertex
from opendoctor.inspector.graph.memory import MemoryGraph
from opendoctor.inspector.graph.states import Category

# A small pool so that operations collide: relinks, removals of linked vertices, and
# upserts over placeholders happen often.
TYPES = ("host", "server", "alarm")
IDS = ("a", "b", "c")
KEYS = [f"{t}:{i}" for t in TYPES for i in IDS]
LABELS = ("causes", "contains", "on")
DIRECTIONS: tuple[Direction, ...] = ("out", "in", "both")

keys = st.sampled_from(KEYS)
labels = st.sampled_from(LABELS)

upserts = st.tuples(
    st.just("upsert"),
    st.sampled_from((Category.RESOURCE, Category.ALARM)),
    st.sampled_from(TYPES),
    st.sampled_from(IDS),
    st.sampled_from((None, "up", "down", "ACTIVE", "critical", "minor")),
    st.sampled_from((None, "n1", "n2")),
)
links = st.tuples(st.just("link"), keys, keys, labels)
unlinks = st.tuples(st.just("unlink"), keys, keys, st.one_of(st.none(), labels))
removes = st.tuples(st.just("remove"), keys)
operations = st.lists(st.one_of(upserts, links, links, unlinks, removes), max_size=40)


def apply(graph: TopologyGraph, op: tuple[Any, ...]) -> object:
    match op:
        case ("upsert", category, type_, id_, raw, name):
            return snapshot(graph.upsert(category, type_, id_, raw_state=raw, name=name))
        case ("link", source, target, label):
            graph.link(source, target, label)
            return None
        case ("unlink", source, target, label):
            return graph.unlink(source, target, label)
        case ("remove", key):
            return graph.remove(key)
    raise AssertionError(op)


def snapshot(v: Vertex | None) -> object:
    if v is None:
        return None
    # Timestamps differ between two graphs by construction; everything else must match.
    return (v.key, v.category, v.type, v.id, v.name, v.raw_state, v.state, v.placeholder)


def observe(graph: TopologyGraph) -> dict[str, object]:
    seen: dict[str, object] = {"len": len(graph), "edges": graph.count_edges()}
    for key in KEYS:
        seen[f"get {key}"] = snapshot(graph.get(key))
        seen[f"edges {key}"] = sorted(graph.edges(key), key=lambda e: (e.source, e.target, e.label))
        for direction in DIRECTIONS:
            for label in (None, *LABELS):
                found = graph.neighbors(key, label, direction)
                # Neighbours are distinct vertices; order is the implementation's own.
                assert len(found) == len({v.key for v in found})
                seen[f"nb {key} {label} {direction}"] = sorted(v.key for v in found)
            seen[f"nb {key} {direction} server"] = sorted(
                v.key for v in graph.neighbors(key, direction=direction, type="server")
            )
        for depth in (0, 1, 2):
            vs, es = graph.subgraph(key, depth)
            if vs:
                assert vs[0].key == key
            seen[f"sub {key} {depth}"] = (
                sorted(v.key for v in vs),
                sorted((e.source, e.target, e.label) for e in es),
            )
        up, down = graph.causal_chain(key)
        assert key not in {v.key for v in up} | {v.key for v in down}
        seen[f"rca {key}"] = (sorted(v.key for v in up), sorted(v.key for v in down))
    return seen


@settings(max_examples=200, deadline=None)
@given(operations)
def test_rx_graph_agrees_with_memory_graph(ops: list[tuple[Any, ...]]) -> None:
    rx, memory = RxGraph(), MemoryGraph()
    for op in ops:
        assert apply(rx, op) == apply(memory, op), op
        assert observe(rx) == observe(memory), op
