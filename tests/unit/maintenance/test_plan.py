"""Which hosts go out together: the emptiest first, never more of a group than it
allows, and only while the hosts left have room for what moves."""

from __future__ import annotations

from opendoctor.core.maintenance import InstanceConstraints, InstanceGroupConstraints
from opendoctor.core.model import Host, Server
from opendoctor.maintenance.plan import next_batch, room_problem, target_for


def cloud(
    sizes: dict[str, int], servers: dict[str, int]
) -> tuple[dict[str, Host], dict[str, list[Server]]]:
    hosts = {n: Host(n, "127.0.0.1", vcpus=v) for n, v in sizes.items()}
    on = {
        n: [Server(f"{n}-{i}", f"{n}-{i}", n, "p", vcpus=1) for i in range(k)]
        for n, k in servers.items()
    }
    return hosts, on


def test_room_counts_free_vcpus_on_the_hosts_left_in_service() -> None:
    hosts, on = cloud({"a": 4, "b": 4, "c": 4}, {"a": 3, "b": 2, "c": 3})
    servers_on = lambda h: on.get(h, [])  # noqa: E731
    assert room_problem(["a"], hosts, servers_on) is None  # 3 to move, 2 + 1 free
    problem = room_problem(["a", "c"], hosts, servers_on)
    assert problem == "6 vCPUs to move off a, c, 2 free"
    hosts["b"].enabled = False  # a disabled host takes nothing
    assert room_problem(["a"], hosts, servers_on) == "3 vCPUs to move off a, 1 free"


def test_unknown_sizes_are_not_counted_against_a_move() -> None:
    hosts, on = cloud({"a": 0, "b": 0}, {"a": 5})
    assert room_problem(["a"], hosts, lambda h: on.get(h, [])) is None


def test_a_batch_takes_the_emptiest_hosts_up_to_the_limit() -> None:
    hosts, on = cloud({"a": 8, "b": 8, "c": 8, "d": 8}, {"a": 3, "b": 1, "c": 0, "d": 2})
    batch = next_batch(list(hosts), 2, hosts, lambda h: on.get(h, []), {}, {})
    assert batch == ["c", "b"]
    assert next_batch(list(hosts), 1, hosts, lambda h: on.get(h, []), {}, {}) == ["c"]


def test_a_group_is_never_more_impacted_than_it_allows() -> None:
    hosts, on = cloud({"a": 8, "b": 8, "c": 8}, {"a": 1, "b": 1, "c": 2})
    # a's and b's servers are members of one group that allows one member out at a time.
    constraints = {
        "a-0": InstanceConstraints("a-0", "p", group_id="g"),
        "b-0": InstanceConstraints("b-0", "p", group_id="g"),
    }
    groups = {"g": InstanceGroupConstraints("g", "p", max_impacted_members=1)}
    batch = next_batch(list(hosts), 3, hosts, lambda h: on.get(h, []), constraints, groups)
    assert batch == ["a", "c"]  # b would make two of g's members move at once
    groups["g"].max_impacted_members = 2
    # Both members may go now; c may not: nothing would be left to take what moves.
    assert next_batch(list(hosts), 3, hosts, lambda h: on.get(h, []), constraints, groups) == [
        "a",
        "b",
    ]


def test_a_move_goes_where_it_will_not_have_to_move_again() -> None:
    hosts, on = cloud({"a": 4, "b": 4, "c": 4, "d": 4}, {"a": 1, "b": 0, "c": 3, "d": 1})
    server = on["a"][0]
    servers_on = lambda h: on.get(h, [])  # noqa: E731
    # b is still to be maintained; c and d are done (or not in the session): d, the
    # emptier of the two.
    assert target_for(server, hosts, servers_on, {"a", "b"}, {}) == "d"
    # Three more on their way to d make c the emptier; none fits when nothing has room.
    assert target_for(server, hosts, servers_on, {"a", "b"}, {"d": 3}) == "c"
    assert target_for(server, hosts, servers_on, {"a", "b", "c", "d"}, {}) is None
