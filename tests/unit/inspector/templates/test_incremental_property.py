"""Incremental evaluation against full re-evaluation, on random graphs and changes.

One engine follows a graph change by change (running after some changes, not all);
another is built from scratch on a copy of the same base graph and evaluates everything
at once. Whatever the order of changes, both must have deduced exactly the same thing.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendoctor.inspector.graph import RxGraph, TopologyGraph
from opendoctor.inspector.graph.memory import MemoryGraph
from opendoctor.inspector.graph.states import Category
from opendoctor.inspector.templates import Engine, Template, compile_template
from opendoctor.inspector.templates.defaults import load_defaults

# Negation (both kinds), OR, a state test on a resource, a causal link between two
# given alarms, a workflow, ANY( over a chain and ALL( over one hop: what the built-ins
# do not exercise.
EXTRA = """
name: extra
entities:
  a1: {category: ALARM, name: a1}
  a3: {category: ALARM, name: a3}
  any_alarm: {category: ALARM}
  host: {type: host}
  switch: {type: switch}
  bad_host: {type: host, state: ERROR}
  server: {type: server}
scenarios:
  - condition: >
      (a1 [on] host AND host [contains] server AND NOT a3 [on] server)
      OR (a1 [on] server AND host [contains] server)
    actions:
      - raise_alarm: {target: server, name: x.lonely, severity: WARNING, causing_alarm: a1}
      - run_workflow: {workflow: check, target: server}
  - condition: a3 [on] host AND a1 [on] host
    actions:
      - add_causal_relationship: {source: a3, target: a1}
  - condition: bad_host [contains] server AND NOT any_alarm [on] server
    actions:
      - set_state: {target: server, state: TRANSIENT}
      - notify: {target: server, state: suspect}
  - condition: host AND ANY(switch [connects*] host, a3 [on] switch)
    actions:
      - raise_alarm: {target: host, name: x.suspect_path, severity: WARNING}
  - condition: a1 [on] host AND ALL(host [contains] server, any_alarm [on] server)
    actions:
      - raise_alarm: {target: host, name: x.all_servers, severity: WARNING, causing_alarm: a1}
"""

TEMPLATES: list[Template] = load_defaults()
TEMPLATES.append(compile_template(EXTRA, "extra", TEMPLATES))

RESOURCES = [
    *[f"host:h{i}" for i in range(3)],
    *[f"server:s{i}" for i in range(4)],
    "switch:sw0",
    "switch:sw1",
    "switch:spine",
    "port:p0",
    "power_feed:f0",
    "power_feed:f1",
    "rack:r0",
]
RELATIONS = [
    *[(f"host:h{h}", f"server:s{s}", "contains") for h in range(3) for s in range(4)],
    *[("switch:sw0", f"host:h{h}", "connects") for h in range(3)],
    # A second top-of-rack switch for two hosts, a spine over both, and a peer link.
    *[("switch:sw1", f"host:h{h}", "connects") for h in range(2)],
    ("switch:spine", "switch:sw0", "connects"),
    ("switch:spine", "switch:sw1", "connects"),
    ("switch:sw0", "switch:sw1", "connects"),
    *[("port:p0", f"server:s{s}", "attached") for s in range(4)],
    ("power_feed:f0", "rack:r0", "powers"),
    ("power_feed:f0", "host:h2", "powers"),
    ("power_feed:f1", "host:h2", "powers"),
    ("power_feed:f1", "rack:r0", "powers"),
    *[("rack:r0", f"host:h{h}", "contains") for h in range(3)],
]
ALARM_NAMES = (
    "compute.host.down",
    "compute.host.unreachable",
    "compute.instance.lifecycle.exited",
    "resource.down",
    "a1",
    "a3",
)

resource_ops = st.tuples(
    st.just("resource"),
    st.sampled_from(RESOURCES),
    st.sampled_from(("up", "down", "ACTIVE", "ERROR", "active")),
)
link_ops = st.tuples(st.just("link"), st.sampled_from(RELATIONS))
unlink_ops = st.tuples(st.just("unlink"), st.sampled_from(RELATIONS))
HOSTS = [r for r in RESOURCES if r.startswith("host:")]
SERVERS = [r for r in RESOURCES if r.startswith("server:")]
OTHERS = [r for r in RESOURCES if r not in HOSTS and r not in SERVERS]
# Mostly alarms on the kind of resource their rules expect, sometimes anywhere.
TARGETS = {
    "compute.host.down": HOSTS,
    "compute.host.unreachable": HOSTS,
    "compute.instance.lifecycle.exited": SERVERS,
    "resource.down": OTHERS,
    "a1": HOSTS + SERVERS,
    "a3": HOSTS + SERVERS + OTHERS,
}
alarm_ops = st.sampled_from(ALARM_NAMES).flatmap(
    lambda name: st.tuples(
        st.just("alarm"),
        st.sampled_from(("f1", "f2", "f3", "f4")),
        st.just(name),
        st.sampled_from(("critical", "warning", "major")),
        st.one_of(st.sampled_from(TARGETS[name]), st.sampled_from(RESOURCES)),
        st.booleans(),  # say which resource in props (as faults do) or leave it out
    )
)
remove_ops = st.tuples(
    st.just("remove"), st.sampled_from([*RESOURCES, "alarm:f1", "alarm:f2", "alarm:f3"])
)
# A populated start (every resource, most relations), so rules have something to match.
starts = st.tuples(
    st.lists(
        st.sampled_from(("up", "down", "ACTIVE", "ERROR")),
        min_size=len(RESOURCES),
        max_size=len(RESOURCES),
    ),
    st.sets(st.sampled_from(RELATIONS), min_size=len(RELATIONS) // 2),
)
steps = st.lists(
    st.tuples(
        st.one_of(
            resource_ops, link_ops, link_ops, link_ops, unlink_ops, alarm_ops, alarm_ops, remove_ops
        ),
        st.booleans(),  # run the engine after this change, or let changes pile up
    ),
    max_size=45,
)


def apply(graph: TopologyGraph, op: tuple[Any, ...]) -> None:
    match op:
        case ("resource", key, raw):
            type_, id_ = key.split(":")
            graph.upsert(Category.RESOURCE, type_, id_, raw_state=raw)
        case ("link", (source, target, label)):
            graph.link(source, target, label)
        case ("unlink", (source, target, label)):
            graph.unlink(source, target, label)
        case ("alarm", id_, name, severity, on, with_props):
            key = f"alarm:{id_}"
            # An alarm is on one resource: moving it means dropping the old edge.
            for old in graph.neighbors(key, "on"):
                graph.unlink(key, old.key, "on")
            props = {"resource": on} if with_props else None
            graph.upsert(Category.ALARM, "alarm", id_, name=name, raw_state=severity, props=props)
            graph.link(key, on, "on")
        case ("remove", key):
            graph.remove(key)
        case _:
            raise AssertionError(op)


def populate(graph: TopologyGraph, start: tuple[list[str], set[tuple[str, str, str]]]) -> None:
    states, relations = start
    for key, raw in zip(RESOURCES, states, strict=True):
        apply(graph, ("resource", key, raw))
    for relation in sorted(relations):
        apply(graph, ("link", relation))


def engine_on(graph: TopologyGraph) -> Engine:
    engine = Engine(graph)
    for template in TEMPLATES:
        engine.add(template)
    return engine


def base_states(graph: TopologyGraph) -> dict[str, str]:
    return {
        v.key: v.aggregated_state
        for v in graph.vertices()
        if not (v.props or {}).get("deduced") and not v.placeholder
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=starts, steps=steps)
def test_incremental_evaluation_agrees_with_full_evaluation(
    start: Any, steps: list[tuple[tuple[Any, ...], bool]]
) -> None:
    live = RxGraph()
    incremental = engine_on(live)
    incremental.attach()
    replica = MemoryGraph()
    populate(live, start)
    populate(replica, start)
    incremental.run()
    for op, run_now in steps:
        apply(live, op)
        apply(replica, op)
        if run_now:
            incremental.run()
    incremental.run()

    full = engine_on(replica)
    full.attach()

    assert incremental.snapshot() == full.snapshot()
    assert base_states(live) == base_states(replica)
    # Every deduced alarm is in the graph, on its resource, and nothing else is deduced.
    deduced = {v.key for v in live.vertices() if (v.props or {}).get("deduced")}
    assert deduced == set(incremental.alarms)
    for key in deduced:
        on = [v.key for v in live.neighbors(key, "on")]
        alarm = live.get(key)
        assert alarm is not None and on == [(alarm.props or {})["resource"]]


@settings(max_examples=100, deadline=None)
@given(start=starts, steps=steps)
def test_undoing_every_change_leaves_nothing_deduced(
    start: Any, steps: list[tuple[tuple[Any, ...], bool]]
) -> None:
    graph = RxGraph()
    engine = engine_on(graph)
    engine.attach()
    populate(graph, start)
    for op, _ in steps:
        apply(graph, op)
    engine.run()
    for key in [v.key for v in graph.vertices() if not (v.props or {}).get("deduced")]:
        graph.remove(key)
    engine.run()
    assert len(graph) == 0
    assert engine.matches == {} and engine.alarms == {} and engine.states == {}
    assert engine.causes == {} and engine.once == {} and engine.by_vertex == {}
