"""A replica killed (SIGKILL) and started again gets its partitions back, in a cluster of
two processes per role on the real RabbitMQ and PostgreSQL, and a storm of host
failures sent across the hand-over loses nothing and tells nobody twice.

The storm's first half comes while the inspector is down (its survivor serves every
partition); the second half is sent host by host while the restarted inspector comes
back and the survivor hands its partitions back. The broker says who it feeds each
partition's queue to (`rabbitmqctl list_consumers`, each connection named with its
process id): the restarted inspector, for its own partitions, at the end.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opendoctor.app.cluster import share
from opendoctor.bus.amqp import partition_of
from opendoctor.notifier import remote
from opendoctor.tools.stack import Stack, running_stack
from tests import pg
from tests.conftest import eventually
from tests.e2e.faults.owners import arrivals, assert_told_once, counts
from tests.e2e.faults.private_rabbit import queued, rabbitmqctl
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.test_cluster_faults import (
    PARTITIONS,
    REPLICAS,
    cluster,
    health,
    owners_of,
    prepared,
    service_env,
    storm,
    storm_lab,
)

SPEC = storm_lab("127.76")
HOSTS = [SPEC.host_name(i) for i in range(1, SPEC.hosts + 1)]
FAILED = HOSTS[:-2]  # two hosts spared: their owners must hear nothing
VICTIM, SURVIVOR = "inspector-0", "inspector-1"
OWN = share(PARTITIONS, REPLICAS, 0)


def halves() -> tuple[list[str], list[str]]:
    """The storm in two halves, each with hosts on the victim's partitions."""
    first, second = FAILED[::2], FAILED[1::2]
    for half in (first, second):
        assert {partition_of(h, PARTITIONS) for h in half} & set(OWN), half
    return first, second


def down_again(host: str) -> list[dict[str, Any]]:
    """A second failure of a host: an event of its own (another monitor event id)."""
    return [
        e | {"details": e["details"] | {"monitor_event_id": f"{host}-down-again"}}
        for e in storm("down", [host])
    ]


async def fed_to(prefix: str, topic: str) -> dict[int, int]:
    """Partition -> the process id the broker feeds its queue to (its active consumer)."""
    consumers, channels, connections = await asyncio.gather(
        rabbitmqctl("list_consumers", "queue_name", "channel_pid", "active"),
        rabbitmqctl("list_channels", "pid", "connection"),
        rabbitmqctl("list_connections", "pid", "client_properties"),
    )
    pid_of: dict[str, int] = {}
    for c in connections:
        props = {p[0]: p[2] for p in c["client_properties"]}
        _, sep, pid = str(props.get("connection_name", "")).rpartition(" pid ")
        if sep and pid.isdigit():
            pid_of[c["pid"]] = int(pid)
    connection_of = {ch["pid"]: ch["connection"] for ch in channels}
    fed: dict[int, int] = {}
    for c in consumers:
        queue = str(c["queue_name"])
        if c["active"] and queue.startswith(f"{prefix}.{topic}.") and queue[-1].isdigit():
            pid = pid_of.get(connection_of.get(c["channel_pid"], ""), 0)
            fed[int(queue.rsplit(".", 1)[1])] = pid
    return fed


async def events_of(s: Stack, name: str) -> dict[str, Any]:
    member = cluster(s).members[name]
    body: dict[str, Any] = (await s.http.get(member.url + "/health")).json()
    # Nothing yet while it subscribes.
    parts: dict[str, Any] = body["consuming"].get("events", {"own": [], "taken_over": []})
    return parts


async def test_a_replica_killed_and_restarted_gets_its_partitions_back_losing_nothing(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    prefix = names.bus_prefix(["events", remote.NOTIFICATIONS_TOPIC], PARTITIONS)
    env = service_env(database, amqp_url, prefix)
    first, second = halves()
    try:
        async with running_stack(SPEC, tmp_path, env, replicas=REPLICAS) as s:
            servers = await prepared(s)
            c = cluster(s)
            before = await fed_to(prefix, "events")
            assert {p: before[p] for p in OWN} == dict.fromkeys(OWN, c.members[VICTIM].pid)

            c.kill(VICTIM)
            resp = await s.http.put(s.api + "/events", json=storm("down", first), headers=s.monitor)
            assert resp.status == 202, resp.body

            async def survivor_serves_all() -> bool:
                return (await events_of(s, SURVIVOR))["taken_over"] == OWN

            await eventually(survivor_serves_all, timeout=30, what="the survivor taking over")
            want_first = owners_of(servers, first)

            async def first_told() -> bool:
                return set(counts(await arrivals(s))) >= want_first

            await eventually(first_told, timeout=60, what="the first half's owners told")

            # Back it comes; the second half follows host by host from the moment it
            # answers, across its claim and the survivor's hand-back (about a second).
            back = await c.restart(VICTIM)

            async def put(events: list[dict[str, Any]]) -> None:
                resp = await s.http.put(s.api + "/events", json=events, headers=s.monitor)
                assert resp.status == 202, resp.body

            async def second_storm() -> None:
                for i, host in enumerate(second):
                    await put(storm("down", [host]))
                    # A host of the first half recovers and fails again: a fault the
                    # restarted inspector restored is cleared by the survivor, which opens
                    # another. After the hand-back the restarted one must see that.
                    again = first[i % len(first)]
                    await put(storm("up", [again]))
                    await put(
                        [
                            dict(e, details=e["details"] | {"monitor_event_id": f"{again}-again"})
                            for e in storm("down", [again])
                        ]
                    )
                    await asyncio.sleep(0.5)

            sending = asyncio.create_task(second_storm())

            async def handed_back() -> bool:
                mine, theirs = await events_of(s, VICTIM), await events_of(s, SURVIVOR)
                return mine["own"] == OWN and theirs["taken_over"] == []

            try:
                await eventually(handed_back, timeout=30, what="the partitions handed back")
                # The hand-back fell within the storm (a test of the hand-over, not after).
                assert not sending.done()
            finally:
                await sending

            async def fed_back() -> bool:
                fed = await fed_to(prefix, "events")
                return all(fed.get(p) == back.pid for p in OWN)

            await eventually(fed_back, timeout=30, what="the broker feeding the restarted one")
            # The survivor stands by again for what it handed back.
            await eventually(lambda: standing_again(s), timeout=30, what="standing by again")

            # Nothing lost, nobody told twice, nobody else told.
            expected = owners_of(servers, FAILED)

            async def everyone() -> bool:
                return set(counts(await arrivals(s))) >= expected

            await eventually(everyone, timeout=60, what="every owner told")

            async def drained() -> bool:
                return not any((await queued(prefix)).values())

            await eventually(drained, timeout=60, what="every bus queue empty")
            assert_told_once(await arrivals(s), expected)
            # One active fault per failed host: none lost, none left over from before.
            active = await s.get("/v1/faults?status=active&limit=1000")
            assert sorted(f["hostname"] for f in active) == sorted(FAILED)

            # Every fault clears, whichever inspector opened it; nobody is told more.
            await put(storm("up", FAILED))

            async def cleared() -> bool:
                return await s.get("/v1/faults?status=active") == []

            await eventually(cleared, timeout=30, what="every fault cleared")
            await eventually(drained, timeout=60, what="every bus queue empty")
            assert_told_once(await arrivals(s), expected)
    finally:
        await pg_databases.give_back(database)


async def standing_again(s: Stack) -> bool:
    for h in await health(s, "inspector"):
        parts = h["consuming"]["events"]
        if len(parts["own"]) + len(parts["standby"]) != PARTITIONS:
            return False
    return True
