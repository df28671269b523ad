"""Observers of the entity graph beside its listener (the rule engine): told of every
change, of a removal while the vertex can still be read, and unable to break the graph;
and `GraphEvents`, the observer that makes the graph's changes live events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from opendoctor.infra.live import Hub
from opendoctor.inspector.graph import ON, RxGraph, TopologyGraph
from opendoctor.inspector.graph.live import GraphEvents
from opendoctor.inspector.graph.memory import MemoryGraph
from opendoctor.inspector.graph.states import Category

R = Category.RESOURCE


@pytest.fixture(params=[RxGraph, MemoryGraph], ids=["rx", "memory"])
def graph(request: pytest.FixtureRequest) -> TopologyGraph:
    factory: Callable[[], TopologyGraph] = request.param
    return factory()


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, ...]], graph: TopologyGraph) -> None:
        self.name, self.log, self.graph = name, log, graph

    def vertex_changed(self, key: str, fresh: bool) -> None:
        self.log.append((self.name, "changed", key, str(fresh)))

    def edge_changed(self, source: str, target: str) -> None:
        self.log.append((self.name, "edge", source, target))

    def vertex_removed(self, key: str, neighbors: list[str]) -> None:
        readable = self.graph.get(key) is not None
        self.log.append((self.name, "removed", key, ",".join(neighbors), str(readable)))


class Broken:
    def vertex_changed(self, key: str, fresh: bool) -> None:
        raise RuntimeError("observer bug")

    def edge_changed(self, source: str, target: str) -> None:
        raise RuntimeError("observer bug")

    def vertex_removed(self, key: str, neighbors: list[str]) -> None:
        raise RuntimeError("observer bug")


def test_observers_hear_what_the_listener_hears(graph: TopologyGraph) -> None:
    log: list[tuple[str, ...]] = []
    graph.listener = Recorder("engine", log, graph)
    graph.observers.add(Recorder("live", log, graph))
    graph.upsert(R, "host", "h1")
    graph.link("server:s1", "host:h1", ON)
    graph.unlink("server:s1", "host:h1")
    graph.link("server:s1", "host:h1", ON)
    graph.remove("host:h1")
    # RxGraph lets the key go before its listener hears (its indices are reused).
    after = "False" if isinstance(graph, RxGraph) else "True"
    assert log == [
        ("engine", "changed", "host:h1", "True"),
        ("live", "changed", "host:h1", "True"),
        ("engine", "edge", "server:s1", "host:h1"),
        ("live", "edge", "server:s1", "host:h1"),
        ("engine", "edge", "server:s1", "host:h1"),
        ("live", "edge", "server:s1", "host:h1"),
        ("engine", "edge", "server:s1", "host:h1"),
        ("live", "edge", "server:s1", "host:h1"),
        # Observers first on a removal, while the vertex is there to read.
        ("live", "removed", "host:h1", "server:s1", "True"),
        ("engine", "removed", "host:h1", "server:s1", after),
    ]


def test_an_observer_alone_is_told_too(graph: TopologyGraph) -> None:
    log: list[tuple[str, ...]] = []
    graph.observers.add(Recorder("live", log, graph))
    graph.link("server:s1", "host:h1", ON)
    graph.remove("host:h1")
    assert log == [
        ("live", "edge", "server:s1", "host:h1"),
        ("live", "removed", "host:h1", "server:s1", "True"),
    ]
    assert graph.get("host:h1") is None


def test_a_failing_observer_breaks_neither_the_graph_nor_the_others(
    graph: TopologyGraph, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[tuple[str, ...]] = []
    graph.listener = Recorder("engine", log, graph)
    graph.observers.add(Broken())
    graph.observers.add(Recorder("live", log, graph))
    v = graph.upsert(R, "host", "h1", raw_state="up")
    graph.link("server:s1", "host:h1", ON)
    assert graph.remove("host:h1")
    assert v.key == "host:h1" and graph.get("host:h1") is None
    assert [entry[:2] for entry in log if entry[0] == "live"] == [
        ("live", "changed"),
        ("live", "edge"),
        ("live", "removed"),
    ]
    assert caplog.text.count("graph observer failed") == 3


def test_observers_come_and_go(graph: TopologyGraph) -> None:
    log: list[tuple[str, ...]] = []
    recorder = Recorder("live", log, graph)
    graph.observers.add(recorder)
    assert len(graph.observers) == 1
    graph.observers.remove(recorder)
    assert not graph.observers
    graph.upsert(R, "host", "h1")
    assert log == []


def test_graph_events_are_of_the_project_of_what_changed(graph: TopologyGraph) -> None:
    hub = Hub()
    graph.observers.add(GraphEvents(graph, hub))
    graph.upsert(R, "host", "quiet")  # nobody listens: nothing made, nothing kept
    admin = hub.subscribe(lambda project: True)
    a = hub.subscribe(lambda project: project == "a")
    graph.upsert(R, "host", "h1", raw_state="down")
    graph.upsert(R, "server", "s1", name="vm1", project="a", raw_state="ACTIVE")
    graph.upsert(R, "server", "s2", project="b")
    graph.upsert(R, "port", "p1", project="a")
    graph.link("server:s1", "host:h1", ON)  # a project's server on a host: admins'
    graph.link("port:p1", "server:s1", ON)  # both ends project-a's
    graph.link("server:s2", "port:p1", ON)  # two projects: admins'
    graph.remove("server:s1")

    events = [(e.kind, e.project, e.data) for e in admin.pending(100)]
    assert events[0] == (
        "graph.vertex",
        None,
        {
            "key": "host:h1",
            "id": "h1",
            "type": "host",
            "name": None,
            "state": "ERROR",
            "raw_state": "down",
            "project": None,
        },
    )
    assert type(events[0][2]["state"]) is str  # plain JSON, not the StrEnum
    assert [(kind, project) for kind, project, _ in events[4:]] == [
        ("graph.edge", None),
        ("graph.edge", "a"),
        ("graph.edge", None),
        ("graph.removed", "a"),
    ]
    assert events[4][2] == {"source": "server:s1", "target": "host:h1", "labels": [ON]}
    mine = [(e.kind, e.data.get("key") or e.data.get("source")) for e in a.pending(100)]
    assert mine == [
        ("graph.vertex", "server:s1"),
        ("graph.vertex", "port:p1"),
        ("graph.edge", "port:p1"),
        ("graph.removed", "server:s1"),
    ]


def test_an_edge_event_says_which_edges_are_left(graph: TopologyGraph) -> None:
    hub = Hub()
    graph.observers.add(GraphEvents(graph, hub))
    sub = hub.subscribe(lambda project: True, kinds=["graph.edge"])
    graph.link("switch:s", "host:h", "connects")
    graph.link("switch:s", "host:h", "powers")
    graph.unlink("switch:s", "host:h", "connects")
    graph.unlink("switch:s", "host:h")
    assert [sorted(e.data["labels"]) for e in sub.pending(10)] == [
        ["connects"],
        ["connects", "powers"],
        ["powers"],
        [],
    ]
