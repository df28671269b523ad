"""The RabbitMQ node dies (SIGKILL of its Erlang VM) in the middle of a storm of host
failures, under a scaled-out service (two processes per role, events and notifications
crossing the broker) with the owners' consumers running; then it is started again.

The node is the test's own (`private_rabbit`): the machine's shared broker serves other
tests and is never touched. PostgreSQL is the shared server, a database of the test's.
"""

from __future__ import annotations

from pathlib import Path

from opendoctor.infra.procs import pid_alive
from opendoctor.tools.stack import Stack, running_stack
from tests import pg
from tests.conftest import eventually
from tests.e2e.faults.owners import arrivals, assert_told_once, counts
from tests.e2e.faults.private_rabbit import PrivateRabbit, unacked_by_process
from tests.e2e.faults.private_rabbit import private_rabbit as private_rabbit  # the fixture
from tests.integration.amqp.test_cluster_faults import (
    FAILED,
    PARTITIONS,
    TableLock,
    cluster,
    first_per_partition,
    owners_of,
    prepared,
    service_env,
    settled,
    storm,
    storm_lab,
)

SPEC = storm_lab("127.74")
PREFIX = "opendoctor"


async def redelivered_events(s: Stack) -> float:
    """Events the inspectors were handed again and found handled already (/metrics)."""
    total = 0.0
    for url in cluster(s).urls("inspector"):
        text = (await s.http.get(url + "/metrics")).body.decode()
        for line in text.splitlines():
            if line.startswith("opendoctor_events_total{") and 'outcome="redelivered"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_broker_killed_mid_storm_tells_each_owner_once(
    tmp_path: Path, private_rabbit: PrivateRabbit, pg_databases: pg.Databases
) -> None:
    """Kill the broker while events are being handled and more wait in its queues, start
    it again: every owner of a failed host's servers is told exactly once, nobody else
    is told, every fault is recorded, nothing is left pending, no process died."""
    database = await pg_databases.take()
    # One message out at a time per partition (a prefetch of one): the storm's first
    # hosts are held while the rest waits in the broker's queues, so the kill loses
    # both kinds of work (by default a partition's hosts are handled side by side, and
    # the whole storm would be held at once, none of it queued).
    workers = {"OPENDOCTOR_BUS__WORKERS": str(PARTITIONS)}
    env = {**service_env(database, private_rabbit.url, PREFIX), **workers}
    try:
        async with running_stack(SPEC, tmp_path, env, replicas=2) as s:
            servers = await prepared(s)
            expected = owners_of(servers, FAILED)
            first = first_per_partition(FAILED)
            told_first = owners_of(servers, first)
            inspectors = [m for m in cluster(s).members.values() if m.role == "inspector"]

            # Work in flight at the kill: the inspectors handed the notifications of the
            # first host of each partition over and wait to record its fault (a lock of
            # the test's holds them there); the rest of the storm waits in the queues.
            async with TableLock(database, "faults", "SHARE") as lock:
                # One request per host, as monitors report them: each event a message
                # of its own, so the rest of the storm waits in the queues behind the
                # held ones (the events of one request travel as a batch per partition).
                for event in storm("down", FAILED):
                    resp = await s.http.put(s.api + "/events", json=[event], headers=s.monitor)
                    assert resp.status == 202, resp.body

                async def held() -> bool:
                    # A process's faults are saved together (group commit): each
                    # inspector waits in one statement for all the hosts it holds.
                    for m in inspectors:
                        if await lock.waiting(f"opendoctor-{m.name} pid {m.pid}") < 1:
                            return False
                    return set(counts(await arrivals(s))) == told_first

                await eventually(held, timeout=60, what="the first host of each partition held")

                async def holding() -> bool:
                    unacked = await unacked_by_process(private_rabbit)
                    return sum(unacked.get(m.pid, 0) for m in inspectors) == PARTITIONS

                await eventually(holding, timeout=60, what="the inspectors holding events")
                # Some owners told, not all: the kill lands in the middle of the storm.
                assert set(counts(await arrivals(s))) == told_first != expected
                await private_rabbit.kill()
                assert not private_rabbit.alive()

            # The handling goes on without the broker (its acks are lost with it).
            async def recorded() -> bool:
                faults = await s.get("/v1/faults?limit=1000")
                return sorted(f["hostname"] for f in faults) == sorted(first)

            await eventually(recorded, timeout=30, what="the held faults recorded")
            await private_rabbit.start()

            async def everyone() -> bool:
                return set(counts(await arrivals(s))) >= expected

            await eventually(everyone, timeout=90, what="every owner told")
            await settled(s, FAILED, expected, PREFIX, private_rabbit)
            assert_told_once(await arrivals(s), expected)
            # The events the inspectors held at the kill came again, and were known.
            assert await redelivered_events(s) == PARTITIONS
            assert all(pid_alive(m.pid) for m in cluster(s).members.values())
            assert all(c.proc is not None and c.proc.poll() is None for c in s.consumers.values())
    finally:
        await pg_databases.give_back(database)
