"""The rule templates at scale, for `opendoctor bench graph`: how long the built-in
templates take to find, deduce and undo what a host fault and a switch fault mean on a
data-centre-sized graph (the work between "event accepted" and "owners' notifications
start", and its clearing)."""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from opendoctor.core.faults import Fault
from opendoctor.inspector.fault_graph import FaultGraph
from opendoctor.inspector.graph import RxGraph, make_key
from opendoctor.inspector.graph.history import AlarmHistory
from opendoctor.inspector.templates import Engine
from opendoctor.inspector.templates.defaults import load_defaults


def _fault(name: str, type_: str, on: str) -> Fault:
    # A fault as the inspector opens it; `hostname` holds the graph key for a resource
    # that is not a host (see model.resource_key).
    return Fault(id=f"bench-{name}", type=type_, hostname=on.removeprefix("host:"), started=0.0)


def measure(
    graph: RxGraph, hosts: int, switches: int, lookups: int, rng: random.Random, freeze: bool
) -> dict[str, Any]:
    faults = FaultGraph(graph, AlarmHistory())
    engine = Engine(graph)
    for template in load_defaults():
        engine.add(template)
    t0 = time.perf_counter()
    engine.attach()
    attach_s = time.perf_counter() - t0
    if freeze:
        # As the service does once started: what start-up built is never collected.
        gc.freeze()

    host_eval: list[float] = []
    host_clear: list[float] = []
    host_notified = host_marked = 0
    for i in range(lookups):
        fault = _fault(
            f"host-{i}", "compute.host.down", make_key("host", f"compute{rng.randrange(hosts)}")
        )
        t = time.perf_counter()
        faults.raised(fault)
        plan = engine.run()
        host_eval.append(time.perf_counter() - t)
        host_notified, host_marked = len(plan.notify), len(plan.mark_down)
        t = time.perf_counter()
        faults.cleared(fault)
        engine.run()
        host_clear.append(time.perf_counter() - t)

    switch_eval: list[float] = []
    switch_clear: list[float] = []
    rca: list[float] = []
    switch_notified = chain = 0
    for i in range(max(5, lookups // 20)):
        fault = _fault(f"switch-{i}", "resource.down", f"switch:sw{rng.randrange(switches)}")
        t = time.perf_counter()
        faults.raised(fault)
        plan = engine.run()
        switch_eval.append(time.perf_counter() - t)
        switch_notified = len(plan.notify)
        if plan.notify:
            leaf = make_key("alarm", f"instance.unreachable@{plan.notify[-1].target}")
            t = time.perf_counter()
            causes, _ = graph.causal_chain(leaf)
            rca.append(time.perf_counter() - t)
            chain = len(causes)
        t = time.perf_counter()
        faults.cleared(fault)
        engine.run()
        switch_clear.append(time.perf_counter() - t)

    return {
        "rules_attach_s": attach_s,
        "rules_templates": len(engine.templates),
        "rules_host_eval": host_eval,
        "rules_host_clear": host_clear,
        "rules_host_notified": host_notified,
        "rules_host_marked": host_marked,
        "rules_switch_eval": switch_eval,
        "rules_switch_clear": switch_clear,
        "rules_switch_notified": switch_notified,
        "rules_rca": rca,
        "rules_rca_chain": chain,
        "rules_left_over": len(engine.matches) + len(engine.alarms),
    }
