from __future__ import annotations

from collections.abc import Callable

import pytest

from opendoctor.inspector.graph import (
    CAUSES,
    CONTAINS,
    ON,
    Edge,
    RxGraph,
    TopologyGraph,
    Vertex,
    make_key,
    split_key,
)
from opendoctor.inspector.graph.memory import MemoryGraph
from opendoctor.inspector.graph.states import Category

R = Category.RESOURCE
A = Category.ALARM


@pytest.fixture(params=[RxGraph, MemoryGraph], ids=["rx", "memory"])
def graph(request: pytest.FixtureRequest) -> TopologyGraph:
    factory: Callable[[], TopologyGraph] = request.param
    return factory()


def keys(vertices: list[Vertex]) -> set[str]:
    return {v.key for v in vertices}


def test_keys() -> None:
    assert make_key("server", "abc") == "server:abc"
    # Ids may contain colons; only the first one separates the type.
    assert split_key("port:a:b") == ("port", "a:b")
    for bad in ("nocolon", ":x", "x:"):
        with pytest.raises(ValueError, match="malformed"):
            split_key(bad)


def test_upsert_creates_and_normalizes(graph: TopologyGraph) -> None:
    v = graph.upsert(R, "server", "s1", name="vm1", project="p", raw_state="SHUTOFF")
    assert v.key == "server:s1"
    assert (v.category, v.type, v.id, v.name, v.project) == (R, "server", "s1", "vm1", "p")
    assert v.raw_state == "SHUTOFF"
    assert v.state == "SUBOPTIMAL"
    assert not v.placeholder
    assert v.created == v.updated > 0
    assert graph.get("server:s1") is v
    assert graph.get("server:nope") is None
    assert len(graph) == 1


def test_upsert_updates_only_given_fields(graph: TopologyGraph) -> None:
    graph.upsert(R, "server", "s1", name="vm1", project="p", raw_state="ACTIVE", props={"a": 1})
    v = graph.upsert(R, "server", "s1", raw_state="ERROR")
    assert (v.name, v.project, v.props) == ("vm1", "p", {"a": 1})
    assert (v.raw_state, v.state) == ("ERROR", "ERROR")
    v = graph.upsert(R, "server", "s1", name="renamed")
    assert (v.name, v.state) == ("renamed", "ERROR")
    assert v.updated >= v.created
    assert len(graph) == 1


def test_aggregated_state(graph: TopologyGraph) -> None:
    v = graph.upsert(R, "server", "s1", raw_state="ACTIVE")
    assert v.aggregated_state == "OK"
    v.deduced_state = "ERROR"
    assert v.aggregated_state == "ERROR"
    a = graph.upsert(A, "alarm", "a1", raw_state="minor")
    a.deduced_state = "CRITICAL"
    assert (a.state, a.aggregated_state) == ("WARNING", "CRITICAL")


def test_link_makes_placeholders_then_upsert_fills_them(graph: TopologyGraph) -> None:
    graph.link("host:h1", "server:s1", CONTAINS)
    graph.link("alarm:x", "host:h1", ON)
    h = graph.get("host:h1")
    assert h is not None and h.placeholder
    assert (h.category, h.type, h.id, h.state, h.raw_state) == (R, "host", "h1", "N/A", None)
    alarm = graph.get("alarm:x")
    assert alarm is not None and alarm.placeholder and alarm.category == A
    assert len(graph) == 3

    real = graph.upsert(R, "host", "h1", name="compute1", raw_state="down")
    assert real is h and not real.placeholder
    assert (real.name, real.state) == ("compute1", "ERROR")
    # The edge linked before the host was known is still there.
    assert keys(graph.neighbors("host:h1", CONTAINS)) == {"server:s1"}
    assert len(graph) == 3


def test_link_is_idempotent_per_label(graph: TopologyGraph) -> None:
    graph.link("host:h", "server:s", CONTAINS)
    graph.link("host:h", "server:s", CONTAINS)
    assert graph.count_edges() == 1
    graph.link("host:h", "server:s", "custom")
    assert graph.count_edges() == 2
    # Two labels, one neighbour.
    assert [v.key for v in graph.neighbors("host:h")] == ["server:s"]
    assert set(graph.edges("host:h")) == {
        Edge("host:h", "server:s", CONTAINS),
        Edge("host:h", "server:s", "custom"),
    }


def test_link_rejects_malformed_keys(graph: TopologyGraph) -> None:
    with pytest.raises(ValueError, match="malformed"):
        graph.link("host:h", "nonsense", CONTAINS)


def test_unlink(graph: TopologyGraph) -> None:
    graph.link("host:h", "server:s", CONTAINS)
    graph.link("host:h", "server:s", "custom")
    assert not graph.unlink("server:s", "host:h", CONTAINS)  # wrong direction
    assert not graph.unlink("host:h", "server:s", "other")
    assert graph.unlink("host:h", "server:s", CONTAINS)
    assert [e.label for e in graph.edges("host:h")] == ["custom"]
    graph.link("host:h", "server:s", CONTAINS)
    assert graph.unlink("host:h", "server:s")  # no label: all of them
    assert graph.edges("host:h") == []
    assert not graph.unlink("host:h", "server:unknown")
    assert len(graph) == 2  # unlinking never removes vertices


def test_remove_drops_edges(graph: TopologyGraph) -> None:
    graph.link("host:h", "server:s1", CONTAINS)
    graph.link("host:h", "server:s2", CONTAINS)
    graph.link("alarm:a", "host:h", ON)
    assert graph.remove("host:h")
    assert not graph.remove("host:h")
    assert graph.get("host:h") is None
    assert graph.count_edges() == 0
    assert graph.edges("server:s1") == []
    assert graph.neighbors("alarm:a") == []
    assert len(graph) == 3


def test_index_reuse_after_removal_keeps_keys_right(graph: TopologyGraph) -> None:
    for name in ("a", "b", "c"):
        graph.upsert(R, "host", name)
    graph.link("host:a", "host:b", "peer")
    graph.link("host:b", "host:c", "peer")
    graph.remove("host:b")
    # The next vertex takes b's old slot inside rustworkx; none of b's edges or
    # identity may leak into it.
    d = graph.upsert(R, "server", "d", raw_state="ACTIVE")
    e = graph.upsert(R, "server", "e")
    assert graph.get("host:b") is None
    assert graph.get("server:d") is d and graph.get("server:e") is e
    assert graph.edges("server:d") == []
    assert graph.neighbors("host:a") == []
    assert graph.neighbors("host:c", direction="in") == []
    graph.link("host:a", "server:d", CONTAINS)
    assert keys(graph.neighbors("host:a")) == {"server:d"}
    assert graph.edges("server:d") == [Edge("host:a", "server:d", CONTAINS)]
    graph.remove("host:a")
    graph.link("alarm:z", "server:e", ON)
    assert graph.edges("server:d") == []
    assert {
        v.key: v.id
        for v in (graph.get(k) for k in ("host:c", "server:d", "server:e", "alarm:z"))
        if v
    } == {
        "host:c": "c",
        "server:d": "d",
        "server:e": "e",
        "alarm:z": "z",
    }
    assert len(graph) == 4


def test_neighbors_filters(graph: TopologyGraph) -> None:
    graph.link("host:h", "server:s1", CONTAINS)
    graph.link("host:h", "server:s2", CONTAINS)
    graph.link("host:h", "volume:v", "uses")
    graph.link("port:p", "server:s1", "attached")
    graph.link("zone:z", "host:h", CONTAINS)
    graph.link("alarm:a", "host:h", ON)

    assert keys(graph.neighbors("host:h")) == {"server:s1", "server:s2", "volume:v"}
    assert keys(graph.neighbors("host:h", CONTAINS)) == {"server:s1", "server:s2"}
    assert keys(graph.neighbors("host:h", type="volume")) == {"volume:v"}
    assert keys(graph.neighbors("host:h", direction="in")) == {"zone:z", "alarm:a"}
    assert keys(graph.neighbors("host:h", CONTAINS, direction="in")) == {"zone:z"}
    assert keys(graph.neighbors("host:h", direction="both", type="alarm")) == {"alarm:a"}
    assert len(graph.neighbors("host:h", direction="both")) == 5
    assert keys(graph.neighbors("server:s1", direction="in")) == {"host:h", "port:p"}
    assert graph.neighbors("host:unknown") == []


def test_self_loop(graph: TopologyGraph) -> None:
    graph.link("switch:s", "switch:s", "loop")
    assert graph.edges("switch:s") == [Edge("switch:s", "switch:s", "loop")]
    assert keys(graph.neighbors("switch:s", direction="both")) == {"switch:s"}
    assert graph.remove("switch:s")
    assert graph.count_edges() == 0


def test_subgraph_depth(graph: TopologyGraph) -> None:
    # zone -> host -> server <- port, and an alarm on the server.
    graph.link("zone:z", "host:h", CONTAINS)
    graph.link("host:h", "server:s", CONTAINS)
    graph.link("port:p", "server:s", "attached")
    graph.link("alarm:a", "server:s", ON)
    graph.link("host:other", "server:x", CONTAINS)

    assert graph.subgraph("host:unknown", 3) == ([], [])
    vs, es = graph.subgraph("server:s", 0)
    assert keys(vs) == {"server:s"} and es == []
    vs, es = graph.subgraph("server:s", 1)
    assert keys(vs) == {"server:s", "host:h", "port:p", "alarm:a"}
    assert set(es) == {
        Edge("host:h", "server:s", CONTAINS),
        Edge("port:p", "server:s", "attached"),
        Edge("alarm:a", "server:s", ON),
    }
    vs, es = graph.subgraph("server:s", 2)
    assert keys(vs) == {"server:s", "host:h", "port:p", "alarm:a", "zone:z"}
    assert len(es) == 4
    assert vs[0].key == "server:s"
    assert keys(graph.subgraph("server:s", 10)[0]) == keys(vs)


def test_causal_chain_both_ways(graph: TopologyGraph) -> None:
    graph.link("alarm:switch", "alarm:host1", CAUSES)
    graph.link("alarm:switch", "alarm:host2", CAUSES)
    graph.link("alarm:host1", "alarm:vm1", CAUSES)
    graph.link("alarm:host2", "alarm:vm2", CAUSES)
    graph.link("alarm:vm1", "server:vm1", ON)  # not a causal edge
    graph.link("alarm:unrelated", "alarm:vm1", "correlates")

    up, down = graph.causal_chain("alarm:vm1")
    assert [v.key for v in up] == ["alarm:host1", "alarm:switch"]  # nearest cause first
    assert down == []
    up, down = graph.causal_chain("alarm:host1")
    assert keys(up) == {"alarm:switch"} and keys(down) == {"alarm:vm1"}
    up, down = graph.causal_chain("alarm:switch")
    assert up == []
    assert keys(down) == {"alarm:host1", "alarm:host2", "alarm:vm1", "alarm:vm2"}
    assert graph.causal_chain("alarm:none") == ([], [])


def test_causal_chain_with_cycle(graph: TopologyGraph) -> None:
    graph.link("alarm:a", "alarm:b", CAUSES)
    graph.link("alarm:b", "alarm:c", CAUSES)
    graph.link("alarm:c", "alarm:a", CAUSES)
    graph.link("alarm:c", "alarm:d", CAUSES)
    up, down = graph.causal_chain("alarm:a")
    assert keys(up) == {"alarm:b", "alarm:c"}  # never the vertex itself
    assert keys(down) == {"alarm:b", "alarm:c", "alarm:d"}
    assert len(up) == 2 and len(down) == 3
    up, down = graph.causal_chain("alarm:d")
    assert keys(up) == {"alarm:a", "alarm:b", "alarm:c"} and down == []
