"""The entity graph: resources and alarms as typed vertices joined by labelled edges.

- `model`: keys, labels, `Vertex`, `Edge` and the `TopologyGraph` protocol;
- `rx`: `RxGraph`, the production implementation (rustworkx), and `memory`, its naive
  twin for property tests;
- `states`: normalising each source's states and merging raw with deduced ones;
- `query`: the JSON filter of `GET /v1/topology`;
- `feed`: keeping hosts and servers in step with the VIM;
- `topology_file`: what the VIM does not know (switches, racks, feeds), from a file or
  the API;
- `history`: alarms raised and cleared.
"""

from __future__ import annotations

from opendoctor.inspector.graph.model import (
    ALARM_TYPES,
    ATTACHED,
    CAUSES,
    COMPRISED,
    CONTAINS,
    MEMBER_OF,
    ON,
    Direction,
    Edge,
    GraphListener,
    TopologyGraph,
    Vertex,
    make_key,
    split_key,
)
from opendoctor.inspector.graph.rx import RxGraph

__all__ = [
    "ALARM_TYPES",
    "ATTACHED",
    "CAUSES",
    "COMPRISED",
    "CONTAINS",
    "MEMBER_OF",
    "ON",
    "Direction",
    "Edge",
    "GraphListener",
    "RxGraph",
    "TopologyGraph",
    "Vertex",
    "make_key",
    "split_key",
]
