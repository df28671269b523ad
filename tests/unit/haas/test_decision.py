"""The decision: which policies apply to a failure, in which order, and which are left
out (with why); and the state a cluster's nodes make it."""

from __future__ import annotations

from opendoctor.core.haas import (
    Cluster,
    ClusterView,
    FencingDevice,
    Node,
    Policy,
    Service,
)
from opendoctor.haas.decision import Failure, cluster_state, decide


def cluster(*policies: Policy, nodes: list[Node] | None = None) -> ClusterView:
    view = ClusterView(Cluster("web", "p1", id="c1"))
    view.nodes = nodes or [
        Node("c1", "server", "vm-a", "active", 1, id="a"),
        Node("c1", "server", "vm-b", "standby", 2, id="b"),
        Node("c1", "server", "vm-c", "standby", 1, id="c"),
    ]
    view.policies = list(policies)
    view.services = [Service("c1", "http", "nginx", id="s1")]
    return view


def policy(name: str, operation: str, priority: int = 0, **kw: object) -> Policy:
    return Policy("c1", name, operation, priority=priority, **kw)  # type: ignore[arg-type]


def test_node_policies_run_in_priority_order_then_by_name() -> None:
    view = cluster(
        policy("z-rebuild", "rebuild", 2),
        policy("b-restart", "restart", 1),
        policy("a-evacuate", "evacuate", 2),
    )
    plan = decide(view, Failure(view.nodes[0]))
    assert [s.policy.name for s in plan.steps] == ["b-restart", "a-evacuate", "z-rebuild"]
    assert plan.skipped == []


def test_a_failed_service_gets_the_service_policies_that_cover_it() -> None:
    view = cluster(
        policy("restart-http", "restart", applies_to="service", services=("http",)),
        policy("restart-db", "restart", applies_to="service", services=("db",)),
        policy("node", "rebuild"),
    )
    http = view.services[0]
    [step] = decide(view, Failure(view.nodes[0], (http,))).steps
    assert (step.policy.name, step.operation, step.services) == ("restart-http", "restart", (http,))


def test_a_failed_service_no_policy_covers_is_the_nodes_failure() -> None:
    view = cluster(
        policy("db", "restart", applies_to="service", services=("db",)), policy("node", "rebuild")
    )
    [step] = decide(view, Failure(view.nodes[0], (view.services[0],))).steps
    assert (step.policy.name, step.services) == ("node", ())


def test_switch_over_goes_to_the_best_healthy_standby_in_the_domain() -> None:
    view = cluster(policy("so", "switch-over"))
    [step] = decide(view, Failure(view.nodes[0])).steps
    # Priority 1 before 2: c before b.
    assert step.targets == ("c", "b")
    view.nodes[2].state = "failed"
    assert decide(view, Failure(view.nodes[0])).steps[0].targets == ("b",)
    limited = cluster(policy("so", "switch-over", domain=("vm-b",)))
    assert decide(limited, Failure(limited.nodes[0])).steps[0].targets == ("b",)


def test_switch_over_is_left_out_for_a_standby_or_without_a_healthy_standby() -> None:
    view = cluster(policy("so", "switch-over"), policy("r", "restart", 5))
    plan = decide(view, Failure(view.nodes[1]))
    assert [s.operation for s in plan.steps] == ["restart"]
    assert plan.skipped[0][1] == "the failed node is not the active one: no role to hand over"
    for node in view.nodes[1:]:
        node.state = "failed"
    plan = decide(view, Failure(view.nodes[0]))
    assert plan.skipped[0][1] == "no healthy standby node to take over"


def test_on_a_down_host_only_moving_the_server_or_its_role_remains() -> None:
    view = cluster(
        policy("r", "restart"),
        policy("b", "rebuild", 1),
        policy("e", "evacuate", 2),
        policy("so", "switch-over", 3),
    )
    plan = decide(view, Failure(view.nodes[0], host_down=True, host="compute1"))
    assert [s.operation for s in plan.steps] == ["evacuate", "switch-over"]
    assert [p.name for p, _ in plan.skipped] == ["r", "b"]


def test_the_failed_host_is_no_target_of_an_evacuation() -> None:
    view = cluster(policy("e", "evacuate", domain=("compute1", "compute3")))
    [step] = decide(view, Failure(view.nodes[0], host_down=True, host="compute1")).steps
    assert step.targets == ("compute3",)
    only = cluster(policy("e", "evacuate", domain=("compute1",)))
    plan = decide(only, Failure(only.nodes[0], host_down=True, host="compute1"))
    assert plan.steps == [] and "no host but the failed one" in plan.skipped[0][1]


def test_a_host_node_is_power_cycled_only_through_its_fencing_device() -> None:
    host = Node("c1", "host", "compute1", "none", id="h")
    view = cluster(policy("r", "restart"), policy("e", "evacuate", 1), nodes=[host])
    plan = decide(view, Failure(host, host_down=True))
    assert plan.steps == []
    assert [p.name for p, _ in plan.skipped] == ["r", "e"]
    view.fencing = [FencingDevice("c1", "h", "bmc")]
    assert [s.operation for s in decide(view, Failure(host, host_down=True)).steps] == ["restart"]


def test_the_cluster_state_follows_its_nodes() -> None:
    view = cluster()
    assert cluster_state(view) == "ok"
    view.nodes[1].state = "failed"
    assert cluster_state(view) == "degraded"
    view.nodes[0].state = "recovering"
    assert cluster_state(view) == "recovering"
    view.nodes[0].state = "failed"
    assert cluster_state(view) == "failed"  # no healthy active node
    plain = cluster(nodes=[Node("c1", "server", "x", id="x"), Node("c1", "server", "y", id="y")])
    plain.nodes[0].state = "failed"
    assert cluster_state(plain) == "degraded"
    plain.nodes[1].state = "failed"
    assert cluster_state(plain) == "failed"
