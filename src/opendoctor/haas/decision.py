"""What to do when a node of a cluster, or a service inside one, fails: pure functions
of the cluster (`core.haas.ClusterView`) and the failure, no I/O.

The policies that apply are tried in order of priority (the lowest number first, then
by name): each is a `Step`, and the engine takes them one after the other until one
succeeds (an escalation ladder). Which apply:

- a service failure: the `service` policies that cover one of the failing services; if
  none does, the failure is the node's (its `node` policies apply);
- a node failure: the `node` policies.

A step that cannot work is left out, with the reason kept for the history: a restart or
rebuild of a server whose host is down (only evacuation takes it off that host), a
rebuild or evacuation of a host node (its servers are host recovery's, not the
cluster's), a switch-over from a node that is not the active one or with no healthy
standby, an evacuation with nowhere to go.

A switch-over moves the active role; it does not repair the failed node. So after a
switch-over the ladder goes on with the steps that repair the node (restart, rebuild,
evacuate); the node comes back as a standby.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opendoctor.core.haas import ClusterState, ClusterView, Node, Policy, Service

REPAIRS = frozenset({"restart", "rebuild", "evacuate"})


@dataclass(frozen=True, slots=True)
class Failure:
    """A node failed (`services` empty), or these services of it did (their names in the
    cluster). `host_down`: the node's host is down (or the node is that host)."""

    node: Node
    services: tuple[Service, ...] = ()
    host_down: bool = False
    host: str | None = None  # the server node's host, when known


@dataclass(frozen=True, slots=True)
class Step:
    """One operation of one policy. `services`: those to restart through the guest agent
    (a service restart), else the operation is on the node. `targets`: hosts to move to
    (evacuate) or nodes to take over (switch-over), in order of preference."""

    policy: Policy
    operation: str
    services: tuple[Service, ...] = ()
    targets: tuple[str, ...] = ()


@dataclass(slots=True)
class Plan:
    steps: list[Step] = field(default_factory=list)
    skipped: list[tuple[Policy, str]] = field(default_factory=list)


def ordered(policies: list[Policy]) -> list[Policy]:
    return sorted(policies, key=lambda p: (p.priority, p.name, p.id))


def decide(view: ClusterView, failure: Failure) -> Plan:
    plan = Plan()
    failing = {s.name for s in failure.services}
    chosen = [p for p in view.policies if any(p.covers(name) for name in failing)]
    if not chosen:
        chosen = [p for p in view.policies if p.applies_to == "node"]
    for policy in ordered(chosen):
        step, why = _step(view, failure, policy)
        if step is None:
            plan.skipped.append((policy, why))
        else:
            plan.steps.append(step)
    return plan


def _step(view: ClusterView, failure: Failure, policy: Policy) -> tuple[Step | None, str]:
    node, op = failure.node, policy.operation
    if op == "switch-over":
        return _switch_over(view, node, policy)
    if policy.applies_to == "service" and op == "restart":
        covered = tuple(s for s in failure.services if policy.covers(s.name))
        if failure.host_down:
            return None, "the node's host is down: its services cannot be restarted"
        return Step(policy, op, services=covered), ""
    if node.kind == "host":
        if op != "restart":
            return None, f"a host node is not {op}ed: its servers are host recovery's"
        if view.fence_of(node.id) is None:
            return None, "the host node has no fencing device to power-cycle it through"
        return Step(policy, op), ""
    if failure.host_down and op in ("restart", "rebuild"):
        return None, f"the server's host is down: it cannot be {op}ed there"
    if op == "evacuate":
        targets = tuple(h for h in policy.domain if h != failure.host)
        if policy.domain and not targets:
            return None, "the fail-over domain holds no host but the failed one"
        return Step(policy, op, targets=targets), ""
    return Step(policy, op), ""


def _switch_over(view: ClusterView, node: Node, policy: Policy) -> tuple[Step | None, str]:
    if node.role != "active":
        return None, "the failed node is not the active one: no role to hand over"
    candidates = [
        n
        for n in view.nodes
        if n.id != node.id
        and n.role == "standby"
        and n.state == "ok"
        and (not policy.domain or n.id in policy.domain or n.ref in policy.domain)
    ]
    if not candidates:
        return None, "no healthy standby node to take over"
    candidates.sort(key=lambda n: (n.priority, n.created, n.id))
    return Step(policy, "switch-over", targets=tuple(n.id for n in candidates)), ""


def cluster_state(view: ClusterView) -> ClusterState:
    """What the cluster's nodes make it: `recovering` while any node is; with roles,
    `failed` without a healthy active node, `degraded` with one but a node down, else
    `ok`; without roles, `failed` when no node is healthy, `degraded` when some are not."""
    nodes = view.nodes
    if any(n.state == "recovering" for n in nodes):
        return "recovering"
    healthy = [n for n in nodes if n.state == "ok"]
    if any(n.role != "none" for n in nodes):
        if not any(n.role == "active" for n in healthy):
            return "failed"
    elif nodes and not healthy:
        return "failed"
    return "ok" if len(healthy) == len(nodes) else "degraded"
