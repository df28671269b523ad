"""The entity graph's changes as live events (`infra.live`), for the dashboard: a graph
observer (`TopologyGraph.observers`).

- `graph.vertex` `{key, id, type, name, state, raw_state, project}`: added or changed
  (`state` is the aggregated one, as `GET /v1/topology` shows it);
- `graph.removed` `{key}`;
- `graph.edge` `{source, target, labels}`: an edge from one to the other came or went;
  `labels` are those of the edges between them now (none: no edge is left).

Each is of the project of its vertex; an edge of the project both its ends share, and
of none (admins only) otherwise: the part of the graph a project is shown is the one
that carries its project, as in `GET /v1/topology`.
"""

from __future__ import annotations

from opendoctor.infra.live import Hub
from opendoctor.inspector.graph.model import TopologyGraph


class GraphEvents:
    """Publishes each change it is told of; O(1) per change, and nothing at all to build
    while nobody is subscribed (a topology of a million vertices loads at start)."""

    def __init__(self, graph: TopologyGraph, hub: Hub) -> None:
        self.graph = graph
        self.hub = hub

    def vertex_changed(self, key: str, fresh: bool) -> None:
        if not self.hub.listening:
            return
        v = self.graph.get(key)
        if v is None:
            return
        data = {
            "key": v.key,
            "id": v.id,
            "type": v.type,
            "name": v.name,
            "state": str(v.aggregated_state),  # a plain str, not the StrEnum
            "raw_state": v.raw_state,
            "project": v.project,
        }
        self.hub.publish("graph.vertex", data, v.project)

    def edge_changed(self, source: str, target: str) -> None:
        if not self.hub.listening:
            return
        a, b = self.graph.get(source), self.graph.get(target)
        shared = a is not None and b is not None and a.project == b.project
        project = a.project if shared and a is not None else None
        labels = self.graph.labels(source, target)
        self.hub.publish(
            "graph.edge", {"source": source, "target": target, "labels": labels}, project
        )

    def vertex_removed(self, key: str, neighbors: list[str]) -> None:
        if not self.hub.listening:
            return
        v = self.graph.get(key)  # still there: observers hear of a removal first
        self.hub.publish("graph.removed", {"key": key}, None if v is None else v.project)
