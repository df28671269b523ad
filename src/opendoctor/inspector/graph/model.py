"""The entity graph's vocabulary: vertex keys, edge labels, `Vertex`, `Edge`, and the
`TopologyGraph` protocol its two implementations share (`rx.RxGraph`, `memory.MemoryGraph`).

Vertices are addressed by a stable string key, ``"<type>:<id>"``; callers never see the
indices of the underlying library, which are reused after a removal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from opendoctor.inspector.graph.states import Category, aggregate, normalize

log = logging.getLogger(__name__)

Direction = Literal["out", "in", "both"]

CAUSES = "causes"
CONTAINS = "contains"
ON = "on"
ATTACHED = "attached"
MEMBER_OF = "member_of"
COMPRISED = "comprised"

# Types whose placeholders are alarms; any other key prefix is taken as a resource.
ALARM_TYPES = frozenset({"alarm"})


def make_key(type: str, id: str) -> str:
    return f"{type}:{id}"


def split_key(key: str) -> tuple[str, str]:
    type, sep, id = key.partition(":")
    if not sep or not type or not id:
        raise ValueError(f"malformed vertex key {key!r} (expected '<type>:<id>')")
    return type, id


@dataclass(slots=True)
class Vertex:
    key: str
    category: str
    type: str
    id: str
    name: str | None = None
    project: str | None = None
    raw_state: str | None = None
    state: str = "N/A"
    deduced_state: str | None = None
    created: float = 0.0
    updated: float = 0.0
    placeholder: bool = False
    props: dict[str, Any] | None = None

    @property
    def aggregated_state(self) -> str:
        return aggregate(self.category, self.state, self.deduced_state)


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str


class TopologyGraph(Protocol):
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
    ) -> Vertex: ...

    def get(self, key: str) -> Vertex | None: ...

    def remove(self, key: str) -> bool: ...

    def link(self, source_key: str, target_key: str, label: str) -> None: ...

    def unlink(self, source_key: str, target_key: str, label: str | None = None) -> bool: ...

    def neighbors(
        self,
        key: str,
        label: str | None = None,
        direction: Direction = "out",
        type: str | None = None,
    ) -> list[Vertex]: ...

    def has_edge(self, source_key: str, target_key: str, label: str) -> bool: ...

    def labels(self, source_key: str, target_key: str) -> list[str]:
        """The labels of the edges from one to the other (none: no edge)."""

    def edges(self, key: str) -> list[Edge]: ...

    def subgraph(self, root_key: str, depth: int) -> tuple[list[Vertex], list[Edge]]: ...

    def causal_chain(self, key: str) -> tuple[list[Vertex], list[Vertex]]: ...

    def __len__(self) -> int: ...

    def count_edges(self) -> int: ...

    def vertices(self) -> list[Vertex]:
        """Every vertex, placeholders included (for small graphs and exports)."""

    def each_vertex(self) -> Iterator[Vertex]:
        """Every vertex, one at a time: no list of a million to build (and for the
        garbage collector to walk while it is young)."""

    def all_edges(self) -> list[Edge]: ...

    listener: GraphListener | None
    """Told of every change (the rule engine's feed)."""

    observers: Observers
    """Also told of every change (the live events, say)."""


class GraphListener(Protocol):
    def vertex_changed(self, key: str, fresh: bool) -> None:
        """`fresh`: the vertex is new, or was a placeholder until now."""

    def edge_changed(self, source: str, target: str) -> None: ...

    def vertex_removed(self, key: str, neighbors: list[str]) -> None: ...


class Observers:
    """Whoever follows the graph's changes besides its `listener` (the rule engine, which
    hears of them first), such as the live events. A removal is told to observers before
    the listener, while the vertex can still be read (what project it was of). The graph
    is on the fault path: an observer that fails is logged and passed over."""

    __slots__ = ("_each",)

    def __init__(self) -> None:
        self._each: tuple[GraphListener, ...] = ()

    def add(self, observer: GraphListener) -> None:
        self._each = (*self._each, observer)

    def remove(self, observer: GraphListener) -> None:
        self._each = tuple(o for o in self._each if o is not observer)

    def __bool__(self) -> bool:
        return bool(self._each)

    def __len__(self) -> int:
        return len(self._each)

    def vertex_changed(self, key: str, fresh: bool) -> None:
        for observer in self._each:
            try:
                observer.vertex_changed(key, fresh)
            except Exception:
                log.exception("graph observer failed", extra={"key": key})

    def edge_changed(self, source: str, target: str) -> None:
        for observer in self._each:
            try:
                observer.edge_changed(source, target)
            except Exception:
                log.exception("graph observer failed", extra={"key": source})

    def vertex_removed(self, key: str, neighbors: list[str]) -> None:
        for observer in self._each:
            try:
                observer.vertex_removed(key, neighbors)
            except Exception:
                log.exception("graph observer failed", extra={"key": key})


def placeholder_vertex(key: str) -> Vertex:
    type, id = split_key(key)
    category = Category.ALARM if type in ALARM_TYPES else Category.RESOURCE
    return Vertex(key, category, type, id, placeholder=True)


def apply_fields(
    vertex: Vertex,
    category: str,
    name: str | None,
    project: str | None,
    raw_state: str | None,
    props: dict[str, Any] | None,
    now: float,
) -> None:
    """Update an existing vertex in place with only the fields the caller gave."""
    if vertex.placeholder:
        vertex.placeholder = False
        vertex.created = now
    renormalize = vertex.category != category or raw_state is not None
    vertex.category = category
    if name is not None:
        vertex.name = name
    if project is not None:
        vertex.project = project
    if raw_state is not None:
        vertex.raw_state = raw_state
    if props is not None:
        vertex.props = props
    if renormalize:
        vertex.state = normalize(category, vertex.type, vertex.raw_state)
    vertex.updated = now


def new_vertex(
    category: str,
    type: str,
    id: str,
    name: str | None,
    project: str | None,
    raw_state: str | None,
    props: dict[str, Any] | None,
) -> Vertex:
    now = time.time()
    return Vertex(
        make_key(type, id),
        category,
        type,
        id,
        name,
        project,
        raw_state,
        normalize(category, type, raw_state),
        None,
        now,
        now,
        False,
        props,
    )
