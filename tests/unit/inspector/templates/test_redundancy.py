"""Redundant uplinks and feeds: a host is cut off only when every way to it is down.

The built-in switch_down and power_and_rack templates on a dual-homed rack (two
top-of-rack switches under two spines, two power feeds), and ALL( / ANY( on their own.
"""

from __future__ import annotations

import pytest

from opendoctor.inspector.graph.memory import MemoryGraph
from opendoctor.inspector.graph.states import Category
from opendoctor.inspector.templates import Engine, TemplateError, compile_template
from opendoctor.inspector.templates.defaults import load_defaults


def fabric() -> MemoryGraph:
    """spine-1, spine-2 → tor-1, tor-2 → compute1 (dual-homed); tor-3 → compute2 (single).

    Each spine connects both top-of-rack switches of the pair; tor-3 hangs off spine-1
    only. Two feeds power compute1; one feed powers compute2."""
    g = MemoryGraph()
    for host in ("compute1", "compute2"):
        g.upsert(Category.RESOURCE, "host", host, raw_state="up")
        g.upsert(Category.RESOURCE, "server", f"vm-{host}", raw_state="ACTIVE", project="p1")
        g.link(f"host:{host}", f"server:vm-{host}", "contains")
    for switch in ("spine-1", "spine-2", "tor-1", "tor-2", "tor-3"):
        g.upsert(Category.RESOURCE, "switch", switch, raw_state="up")
    for spine in ("spine-1", "spine-2"):
        for tor in ("tor-1", "tor-2"):
            g.link(f"switch:{spine}", f"switch:{tor}", "connects")
    g.link("switch:spine-1", "switch:tor-3", "connects")
    g.link("switch:tor-1", "host:compute1", "connects")
    g.link("switch:tor-2", "host:compute1", "connects")
    g.link("switch:tor-3", "host:compute2", "connects")
    for feed in ("feed-a", "feed-b"):
        g.upsert(Category.RESOURCE, "power_feed", feed, raw_state="up")
        g.link(f"power_feed:{feed}", "host:compute1", "powers")
    g.link("power_feed:feed-a", "host:compute2", "powers")
    return g


def down(g: MemoryGraph, engine: Engine, resource: str) -> None:
    fault = f"f-{resource.replace(':', '-')}"
    g.upsert(Category.ALARM, "alarm", fault, name="resource.down", raw_state="critical")
    g.link(f"alarm:{fault}", resource, "on")
    engine.run()


def up(g: MemoryGraph, engine: Engine, resource: str) -> None:
    g.remove(f"alarm:f-{resource.replace(':', '-')}")
    engine.run()


def deduced(engine: Engine) -> set[str]:
    """The ids of the alarms the templates deduced (`<name>@<resource key>`)."""
    return {key.removeprefix("alarm:") for key in engine.alarms}


@pytest.fixture
def rack() -> tuple[MemoryGraph, Engine]:
    g = fabric()
    engine = Engine(g)
    for template in load_defaults():
        engine.add(template)
    engine.attach()
    return g, engine


def test_a_dual_homed_host_stays_reachable_when_one_switch_fails(
    rack: tuple[MemoryGraph, Engine],
) -> None:
    g, engine = rack
    down(g, engine, "switch:tor-1")
    assert "host.uplink_down@host:compute1" not in deduced(engine)
    assert "instance.unreachable@server:vm-compute1" not in deduced(engine)
    # ... but it has lost its redundancy, and says so.
    assert "host.uplink_degraded@host:compute1" in deduced(engine)
    assert g.get("host:compute1").aggregated_state == "OK"  # type: ignore[union-attr]


def test_it_is_unreachable_when_both_switches_fail_and_back_when_one_returns(
    rack: tuple[MemoryGraph, Engine],
) -> None:
    g, engine = rack
    down(g, engine, "switch:tor-1")
    plan = engine.run()
    down(g, engine, "switch:tor-2")
    assert "host.uplink_down@host:compute1" in deduced(engine)
    assert "instance.unreachable@server:vm-compute1" in deduced(engine)
    assert "host.uplink_degraded@host:compute1" not in deduced(engine)
    assert not plan.notify
    # Both switches are causes of the uplink alarm (RCA shows the pair).
    causes = {n.key for n in g.neighbors("alarm:host.uplink_down@host:compute1", "causes", "in")}
    assert causes == {"alarm:f-switch-tor-1", "alarm:f-switch-tor-2"}
    up(g, engine, "switch:tor-2")
    assert "host.uplink_down@host:compute1" not in deduced(engine)
    assert "instance.unreachable@server:vm-compute1" not in deduced(engine)
    assert "host.uplink_degraded@host:compute1" in deduced(engine)


def test_the_owner_is_told_only_when_the_last_way_goes(rack: tuple[MemoryGraph, Engine]) -> None:
    g, engine = rack
    g.upsert(Category.ALARM, "alarm", "a", name="resource.down", raw_state="critical")
    g.link("alarm:a", "switch:tor-1", "on")
    assert engine.run().notify == []
    g.upsert(Category.ALARM, "alarm", "b", name="resource.down", raw_state="critical")
    g.link("alarm:b", "switch:tor-2", "on")
    told = engine.run(owners_first=True).notify
    assert [n.target for n in told] == ["server:vm-compute1"]


def test_losing_both_spines_cuts_off_every_host_below_them_at_any_depth(
    rack: tuple[MemoryGraph, Engine],
) -> None:
    g, engine = rack
    down(g, engine, "switch:spine-1")
    # compute2 hangs off spine-1 alone (through tor-3): cut off; compute1 is not.
    assert "host.uplink_down@host:compute2" in deduced(engine)
    assert "host.uplink_down@host:compute1" not in deduced(engine)
    assert "host.uplink_degraded@host:compute1" in deduced(engine)
    down(g, engine, "switch:spine-2")
    assert "host.uplink_down@host:compute1" in deduced(engine)
    causes = {n.key for n in g.neighbors("alarm:host.uplink_down@host:compute1", "causes", "in")}
    assert causes == {"alarm:f-switch-spine-1", "alarm:f-switch-spine-2"}
    # A new path up (a third spine cabled to tor-2) makes compute1 reachable again.
    g.upsert(Category.RESOURCE, "switch", "spine-3", raw_state="up")
    g.link("switch:spine-3", "switch:tor-2", "connects")
    engine.run()
    assert "host.uplink_down@host:compute1" not in deduced(engine)
    assert "host.uplink_down@host:compute2" in deduced(engine)
    # ... and cutting that cable again cuts it off.
    g.unlink("switch:spine-3", "switch:tor-2", "connects")
    engine.run()
    assert "host.uplink_down@host:compute1" in deduced(engine)


def test_a_peer_link_between_the_pair_is_no_way_out(rack: tuple[MemoryGraph, Engine]) -> None:
    g, engine = rack
    g.link("switch:tor-1", "switch:tor-2", "connects")
    g.link("switch:tor-2", "switch:tor-1", "connects")
    engine.run()
    down(g, engine, "switch:spine-1")
    down(g, engine, "switch:spine-2")
    assert "host.uplink_down@host:compute1" in deduced(engine)


def test_one_of_two_feeds_is_a_warning_and_both_take_the_host_down(
    rack: tuple[MemoryGraph, Engine],
) -> None:
    g, engine = rack
    down(g, engine, "power_feed:feed-a")
    # compute2 has feed-a alone; compute1 has feed-b as well.
    assert "host.power_lost@host:compute2" in deduced(engine)
    assert "host.power_lost@host:compute1" not in deduced(engine)
    assert "host.power_degraded@host:compute1" in deduced(engine)
    g.upsert(Category.ALARM, "alarm", "b", name="resource.down", raw_state="critical")
    g.link("alarm:b", "power_feed:feed-b", "on")
    plan = engine.run(owners_first=True)
    assert "host:compute1" in plan.mark_down
    engine.run()
    assert "host.power_lost@host:compute1" in deduced(engine)


QUANTIFIED = """
name: all_servers_down
entities:
  host: {{type: host}}
  server: {{type: server}}
  alarm: {{category: ALARM, name: compute.instance.lifecycle.exited}}
scenarios:
  - condition: host AND {q}(host [contains] server, alarm [on] server)
    actions:
      - raise_alarm: {{target: host, name: host.all_servers_down, severity: WARNING}}
"""


@pytest.mark.parametrize(
    ("q", "exited", "raised"),
    [
        ("ALL", ["a", "b"], True),
        ("ALL", ["a"], False),
        ("ANY", ["a"], True),
        ("ANY", [], False),
        ("NOT ANY", [], True),
        ("NOT ALL", ["a"], True),
    ],
)
def test_all_and_any_over_the_servers_of_a_host(q: str, exited: list[str], raised: bool) -> None:
    g = MemoryGraph()
    g.upsert(Category.RESOURCE, "host", "h", raw_state="up")
    g.upsert(Category.RESOURCE, "host", "empty", raw_state="up")
    for s in ("a", "b"):
        g.upsert(Category.RESOURCE, "server", s, raw_state="ACTIVE")
        g.link("host:h", f"server:{s}", "contains")
    engine = Engine(g)
    engine.add(compile_template(QUANTIFIED.format(q=q)))
    engine.attach()
    for s in exited:
        g.upsert(Category.ALARM, "alarm", s, name="compute.instance.lifecycle.exited")
        g.link(f"alarm:{s}", f"server:{s}", "on")
    engine.run()
    assert ("host.all_servers_down@host:h" in deduced(engine)) is raised
    # A host with no servers: ALL and ANY both need one to hold.
    empty = "host.all_servers_down@host:empty" in deduced(engine)
    assert empty is q.startswith("NOT")


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("host AND ALL(host [contains] server, alarm [on] server AND alarm [on] host)", "binds"),
        ("host AND ALL(host [contains] server, alarm [on] other)", "must name 'server'"),
        ("host AND ALL(other [contains] server, alarm [on] server)", "one end of"),
        ("host AND ALL(host [contains] server)", "expected ','"),
        ("host AND ALL(host [contains] server, ANY(x [y] server, x))", "inside another"),
        ("host AND NOT host [contains*] server", "NOT before a path"),
    ],
)
def test_quantifiers_that_make_no_sense_are_refused(condition: str, message: str) -> None:
    text = f"""
name: bad
entities:
  host: {{type: host}}
  server: {{type: server}}
  other: {{type: server}}
  alarm: {{category: ALARM}}
  x: {{type: switch}}
scenarios:
  - condition: {condition}
    actions:
      - set_state: {{target: host, state: SUBOPTIMAL}}
"""
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    assert message in str(caught.value)
