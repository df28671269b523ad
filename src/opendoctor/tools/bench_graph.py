"""`opendoctor bench graph`: build a data-centre-sized entity graph and time fault lookups.

Topology: one zone [contains] switches, each switch [connects] `hosts_per_switch` hosts,
each host [contains] its servers, each server has one port ([attached] to it). Reported:
build time and memory per entity, the servers hit by a host fault and by a switch fault,
an RCA query over a chain of alarms, and the longest garbage-collection pause.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.inspector.graph import ATTACHED, CAUSES, CONTAINS, ON, RxGraph, make_key
from opendoctor.inspector.graph.states import Category
from opendoctor.tools import bench_rules
from opendoctor.tools.bench import percentile

CONNECTS = "connects"
PROJECTS = tuple(f"project-{i}" for i in range(20))
R = Category.RESOURCE
A = Category.ALARM


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is not available)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class GcPauses:
    """Times every collection through `gc.callbacks` (start → stop of each generation run)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._start)

    @contextmanager
    def watching(self) -> Iterator[GcPauses]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def _uuid(kind: int, n: int) -> str:
    # UUID-shaped (36 chars, as Nova/Neutron ids are) so memory is realistic, but
    # deterministic and far cheaper to make than uuid4().
    return f"{n:08x}-{kind:04x}-4000-8000-{n:012x}"


def _stats_us(samples: list[float]) -> dict[str, float]:
    us = [s * 1e6 for s in samples]
    return {
        "p50": percentile(us, 50),
        "p99": percentile(us, 99),
        "max": max(us),
    }


def build(
    graph: RxGraph, hosts: int, servers_per_host: int, hosts_per_switch: int, freeze: bool
) -> int:
    """Populate `graph`; returns the number of switches.

    With `freeze`, the loaded vertices are moved to the permanent generation as we go:
    otherwise every full collection walks the whole graph (about 0.2 s at a million
    vertices), although vertices never form reference cycles and are freed by refcount.
    """
    switches = -(-hosts // hosts_per_switch)
    zone = graph.upsert(R, "zone", "nova", name="nova", raw_state="available").key
    for s in range(switches):
        sw = graph.upsert(R, "switch", f"sw{s}", name=f"sw{s}", raw_state="up").key
        graph.link(zone, sw, CONTAINS)
    n = 0
    for h in range(hosts):
        if freeze and h % 100 == 0:
            gc.freeze()
        host = graph.upsert(R, "host", f"compute{h}", name=f"compute{h}", raw_state="up").key
        graph.link(make_key("switch", f"sw{h // hosts_per_switch}"), host, CONNECTS)
        for _ in range(servers_per_host):
            project = PROJECTS[n % len(PROJECTS)]
            server = graph.upsert(
                R, "server", _uuid(1, n), name=f"vm-{n}", project=project, raw_state="ACTIVE"
            ).key
            graph.link(host, server, CONTAINS)
            port = graph.upsert(R, "port", _uuid(2, n), project=project, raw_state="ACTIVE").key
            graph.link(port, server, ATTACHED)
            n += 1
    return switches


def _servers_of(graph: RxGraph, host_key: str) -> list[str]:
    return [v.key for v in graph.neighbors(host_key, CONTAINS, "out", type="server")]


def _alarm_chain(graph: RxGraph, switch_key: str) -> tuple[str, str, int]:
    """Switch alarm causes host alarms causes server alarms; returns (switch alarm, one
    server alarm, number of alarms)."""
    top = graph.upsert(A, "alarm", f"link-down-{switch_key}", raw_state="critical").key
    graph.link(top, switch_key, ON)
    count = 1
    server_alarm = top
    for host in graph.neighbors(switch_key, CONNECTS, "out", type="host"):
        ha = graph.upsert(A, "alarm", f"host-down-{host.id}", raw_state="critical").key
        graph.link(ha, host.key, ON)
        graph.link(top, ha, CAUSES)
        count += 1
        for server in _servers_of(graph, host.key):
            sa = graph.upsert(A, "alarm", f"unreachable-{server}", raw_state="major").key
            graph.link(sa, server, ON)
            graph.link(ha, sa, CAUSES)
            server_alarm = sa
            count += 1
    return top, server_alarm, count


def run(
    hosts: int = 10_000,
    servers_per_host: int = 50,
    hosts_per_switch: int = 40,
    lookups: int = 1000,
    *,
    freeze: bool = True,
) -> dict[str, Any]:
    rng = random.Random(42)
    pauses = GcPauses()
    try:
        with pauses.watching():
            return _run(rng, pauses, hosts, servers_per_host, hosts_per_switch, lookups, freeze)
    finally:
        if freeze:
            # Leave the process as we found it: what we froze becomes collectable again.
            gc.unfreeze()


def _run(
    rng: random.Random,
    pauses: GcPauses,
    hosts: int,
    servers_per_host: int,
    hosts_per_switch: int,
    lookups: int,
    freeze: bool,
) -> dict[str, Any]:
    graph = RxGraph()
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    switches = build(graph, hosts, servers_per_host, hosts_per_switch, freeze)
    build_s = time.perf_counter() - t0
    build_pauses = len(pauses.pauses)
    rss_after = rss_bytes()
    entities = len(graph)
    edges = graph.count_edges()

    host_times: list[float] = []
    hit = 0
    for _ in range(lookups):
        key = make_key("host", f"compute{rng.randrange(hosts)}")
        t = time.perf_counter()
        hit = len(_servers_of(graph, key))
        host_times.append(time.perf_counter() - t)

    switch_times: list[float] = []
    switch_hit = 0
    for _ in range(lookups):
        key = make_key("switch", f"sw{rng.randrange(switches)}")
        t = time.perf_counter()
        found = [
            s
            for h in graph.neighbors(key, CONNECTS, "out", type="host")
            for s in _servers_of(graph, h.key)
        ]
        switch_times.append(time.perf_counter() - t)
        switch_hit = len(found)

    top, leaf, alarms = _alarm_chain(graph, make_key("switch", "sw0"))
    rca_up: list[float] = []
    rca_down: list[float] = []
    chain = (0, 0)
    for _ in range(lookups):
        t = time.perf_counter()
        up, _down = graph.causal_chain(leaf)
        rca_up.append(time.perf_counter() - t)
        t = time.perf_counter()
        _up, down = graph.causal_chain(top)
        rca_down.append(time.perf_counter() - t)
        chain = (len(up), len(down))

    # The hand-made chain has served; the templates start from a graph without alarms.
    for effect in graph.causal_chain(top)[1]:
        graph.remove(effect.key)
    graph.remove(top)
    rules = bench_rules.measure(graph, hosts, switches, lookups, rng, freeze)
    timed = {k: _stats_us(v) for k, v in rules.items() if isinstance(v, list) and v}
    counts = {k: v for k, v in rules.items() if not isinstance(v, list)}

    return {
        **timed,
        **counts,
        "hosts": hosts,
        "switches": switches,
        "servers": hosts * servers_per_host,
        "entities": entities,
        "edges": edges,
        "alarms": alarms,
        "build_s": build_s,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_per_entity": (rss_after - rss_before) / max(entities, 1),
        "host_fault_us": _stats_us(host_times),
        "host_fault_servers": hit,
        "switch_fault_us": _stats_us(switch_times),
        "switch_fault_servers": switch_hit,
        "rca_upstream_us": _stats_us(rca_up),
        "rca_downstream_us": _stats_us(rca_down),
        "rca_chain": chain,
        "gc_freeze": freeze,
        "gc_collections": len(pauses.pauses),
        "gc_max_pause_ms": max(pauses.pauses, default=0.0) * 1e3,
        "gc_max_pause_build_ms": max(pauses.pauses[:build_pauses], default=0.0) * 1e3,
        "gc_max_pause_queries_ms": max(pauses.pauses[build_pauses:], default=0.0) * 1e3,
        "gc_total_ms": sum(pauses.pauses) * 1e3,
    }


def print_graph(console: Console, result: dict[str, Any]) -> None:
    mb = 1024 * 1024
    table = Table(title="entity graph (rustworkx)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("entities", f"{result['entities']:,}")
    table.add_row("edges", f"{result['edges']:,}")
    table.add_row("build", f"{result['build_s']:.2f} s")
    table.add_row(
        "memory (RSS growth)",
        f"{(result['rss_after'] - result['rss_before']) / mb:,.0f} MB"
        f" ({result['bytes_per_entity']:,.0f} B/entity)",
    )
    for label, key, count in (
        ("host fault", "host_fault_us", f"{result['host_fault_servers']} servers"),
        ("switch fault", "switch_fault_us", f"{result['switch_fault_servers']} servers"),
        ("RCA upstream", "rca_upstream_us", f"{result['rca_chain'][0]} causes"),
        ("RCA downstream", "rca_downstream_us", f"{result['rca_chain'][1]} effects"),
    ):
        s = result[key]
        table.add_row(
            f"{label} ({count})",
            f"p50 {s['p50']:,.1f} µs · p99 {s['p99']:,.1f} µs · max {s['max']:,.1f} µs",
        )
    table.add_row("rule templates in force", str(result["rules_templates"]))
    table.add_row("  first evaluation of the whole graph", f"{result['rules_attach_s']:.2f} s")
    for label, key, count in (
        (
            "  host fault through the templates",
            "rules_host_eval",
            f"{result['rules_host_notified']} to notify, "
            f"{result['rules_host_marked']} to mark down",
        ),
        ("  host fault cleared (undo)", "rules_host_clear", ""),
        (
            "  switch fault through the templates",
            "rules_switch_eval",
            f"{result['rules_switch_notified']} to notify",
        ),
        ("  switch fault cleared (undo)", "rules_switch_clear", ""),
        ("  RCA of a deduced alarm", "rules_rca", f"{result['rules_rca_chain']} causes"),
    ):
        s = result[key]
        table.add_row(
            f"{label}" + (f" ({count})" if count else ""),
            f"p50 {s['p50'] / 1e3:,.2f} ms · p99 {s['p99'] / 1e3:,.2f} ms"
            f" · max {s['max'] / 1e3:,.2f} ms",
        )
    table.add_row(
        "garbage collection",
        f"{result['gc_collections']} runs · longest {result['gc_max_pause_ms']:.1f} ms"
        f" · total {result['gc_total_ms']:.0f} ms",
    )
    table.add_row(
        f"  longest pause (freeze {'on' if result['gc_freeze'] else 'off'})",
        f"building {result['gc_max_pause_build_ms']:.1f} ms"
        f" · querying {result['gc_max_pause_queries_ms']:.1f} ms",
    )
    console.print(table)
