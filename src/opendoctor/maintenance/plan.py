"""Which hosts a session takes out next, and whether the rest can hold their instances.

Hosts go emptiest first, several at once up to the session's limit, but only where the
constraints allow: no instance group has more members on the hosts taken out together
than its `max_impacted_members`, and the hosts left in service have room for what is
moved (where the VIM says how big hosts and servers are; a size of 0 is unknown and
not counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from opendoctor.core.maintenance import InstanceConstraints, InstanceGroupConstraints
from opendoctor.core.model import Host, Server

ServersOn = Callable[[str], list[Server]]


def room_problem(
    out: Iterable[str], hosts: Mapping[str, Host], servers_on: ServersOn
) -> str | None:
    """Why the hosts in service could not take every instance of `out`, or None."""
    leaving = set(out)
    need_cpu = need_ram = 0
    for name in leaving:
        for server in servers_on(name):
            need_cpu += server.vcpus
            need_ram += server.ram_mb
    free_cpu = free_ram = 0
    unknown_cpu = unknown_ram = False
    for host in hosts.values():
        if host.name in leaving or not host.enabled or host.forced_down or host.state != "up":
            continue
        used = servers_on(host.name)
        if host.vcpus:
            free_cpu += max(0, host.vcpus - sum(s.vcpus for s in used))
        else:
            unknown_cpu = True
        if host.ram_mb:
            free_ram += max(0, host.ram_mb - sum(s.ram_mb for s in used))
        else:
            unknown_ram = True
    if need_cpu > free_cpu and not unknown_cpu:
        return f"{need_cpu} vCPUs to move off {', '.join(sorted(leaving))}, {free_cpu} free"
    if need_ram > free_ram and not unknown_ram:
        return f"{need_ram} MB to move off {', '.join(sorted(leaving))}, {free_ram} MB free"
    return None


def next_batch(
    left: list[str],
    limit: int,
    hosts: Mapping[str, Host],
    servers_on: ServersOn,
    constraints: Mapping[str, InstanceConstraints],
    groups: Mapping[str, InstanceGroupConstraints],
) -> list[str]:
    """The hosts to take out together next: the emptiest first, then each next one that
    keeps every group within its limit and leaves room for what moves (at least one)."""
    ordered = sorted(left, key=lambda h: (len(servers_on(h)), h))
    batch: list[str] = []
    impacted: Counter[str] = Counter()
    for host in ordered:
        if len(batch) >= max(1, limit):
            break
        members = Counter(
            c.group_id
            for s in servers_on(host)
            if (c := constraints.get(s.id)) is not None and c.group_id
        )
        if batch:
            over = any(
                impacted[g] + n > max(1, groups[g].max_impacted_members)
                for g, n in members.items()
                if g in groups
            )
            if over or room_problem([*batch, host], hosts, servers_on) is not None:
                continue
        batch.append(host)
        impacted.update(members)
    return batch


def target_for(
    server: Server,
    hosts: Mapping[str, Host],
    servers_on: ServersOn,
    avoid: set[str],
    placing: Mapping[str, int],
) -> str | None:
    """Where to move `server`: a host in service that the session will not take out
    later (one already maintained, or not in the session), with room for it, the least
    loaded first; None if there is none (the VIM's scheduler then chooses). `placing`:
    vCPUs already on their way to each host."""

    def room(host: Host) -> bool:
        if not host.vcpus:
            return True
        used = sum(s.vcpus for s in servers_on(host.name)) + placing.get(host.name, 0)
        return used + server.vcpus <= host.vcpus

    usable = [
        h
        for h in hosts.values()
        if h.name not in avoid
        and h.name != server.host
        and h.enabled
        and not h.forced_down
        and h.state == "up"
        and room(h)
    ]
    if not usable:
        return None
    best = min(usable, key=lambda h: (len(servers_on(h.name)) + placing.get(h.name, 0), h.name))
    return best.name
