"""A replica killed (SIGKILL) while it holds unacknowledged work, in a cluster of two
processes per role on the real RabbitMQ and PostgreSQL, during a storm of host
failures: every owner of a failed host's servers is told exactly once (counted from
every callback that reached the consumers, repeats included), nobody else is told, and
no fault, alarm or notification is left stuck.

The kill must land while the victim provably holds work: the test holds a lock in the
database that the victim's handling needs at a chosen step, sees the victim wait for
it in `pg_stat_activity` (each member's connections are named after it), and asks the
broker which process holds unacknowledged messages (each connection is named with its
process id). Then it kills the victim, releases the lock, and lets the standby replica
take the victim's partitions over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from opendoctor.app.cluster import Cluster
from opendoctor.bus.amqp import partition_of
from opendoctor.core.model import Event
from opendoctor.infra.procs import pid_alive
from opendoctor.lab.spec import LabSpec
from opendoctor.monitor.standalone import doctor_event
from opendoctor.notifier import remote
from opendoctor.tools.stack import ADMIN, Stack, running_stack
from tests import pg
from tests.conftest import eventually
from tests.e2e.faults.owners import arrivals, assert_told_once, counts
from tests.e2e.faults.private_rabbit import PrivateRabbit, queued, unacked_by_process
from tests.integration.amqp.conftest import Names

HOSTS = 12


def storm_lab(ip_prefix: str) -> LabSpec:
    """Twelve hosts of ten VMs, two projects: the lab of the storms here."""
    return LabSpec(
        hosts=HOSTS,
        vms=HOSTS * 10,
        projects=["project-a", "project-b"],
        ip_prefix=ip_prefix,
        vm_mode="inline",
        heartbeat=False,
    )


SPEC = storm_lab("127.73")
PARTITIONS = 4
REPLICAS = 2
HOST_NAMES = [SPEC.host_name(i) for i in range(1, HOSTS + 1)]
# The storm spares two hosts, whose owners must hear nothing.
FAILED = HOST_NAMES[:-2]
# Every partition gets some of the storm, so each replica has work on each of its own.
assert {partition_of(h, PARTITIONS) for h in FAILED} == set(range(PARTITIONS))


def storm(status: str, hosts: list[str] = FAILED) -> list[dict[str, Any]]:
    return [
        doctor_event(
            Event(
                type="compute.host.down",
                hostname=host,
                status=status,
                time=time.time(),
                monitor="test-storm",
                monitor_event_id=f"{host}-{status}",
            )
        )
        for host in hosts
    ]


def first_per_partition(hosts: list[str]) -> list[str]:
    """The hosts whose events (and notifications) each partition delivers first: the
    API publishes a storm's events one after the other, in order."""
    first: dict[int, str] = {}
    for host in hosts:
        first.setdefault(partition_of(host, PARTITIONS), host)
    return list(first.values())


def service_env(database: str, amqp_url: str, prefix: str) -> dict[str, str]:
    return {
        "OPENDOCTOR_DATABASE_URL": pg.url_for(database),
        "OPENDOCTOR_BUS__KIND": "amqp",
        "OPENDOCTOR_BUS__URL": amqp_url,
        "OPENDOCTOR_BUS__PREFIX": prefix,
        "OPENDOCTOR_BUS__PARTITIONS": str(PARTITIONS),
        # Long enough for both replicas to come first on their own partitions (they
        # start together on a loaded machine): a replica holds its share.
        "OPENDOCTOR_BUS__STANDBY_AFTER": "2",
        "OPENDOCTOR_BUS__RETRY_DELAY": "0.1",
        "OPENDOCTOR_MONITOR__ENABLED": "false",
        "OPENDOCTOR_INSPECTOR__HOLD_DOWN": "0",  # the storm's `up` clears at once
        "OPENDOCTOR_RECOVERY__ENABLED": "false",
        "OPENDOCTOR_NOTIFIER__SYNC_INTERVAL": "0.1",
        "OPENDOCTOR_NOTIFIER__BACKOFF_INITIAL": "0.05",
        "OPENDOCTOR_LOG_LEVEL": "WARNING",
    }


def cluster(s: Stack) -> Cluster:
    assert isinstance(s.service, Cluster)
    return s.service


async def health(s: Stack, role: str) -> list[dict[str, Any]]:
    return [(await s.http.get(url + "/health")).json() for url in cluster(s).urls(role)]


async def standing(s: Stack) -> bool:
    """Every inspector and notifier consumes its partitions and stands by for the rest."""
    for role in ("inspector", "notifier"):
        for h in await health(s, role):
            parts = next(iter(h["consuming"].values()), {"own": [], "standby": []})
            if len(parts["own"]) + len(parts["standby"]) != PARTITIONS:
                return False
    return True


async def prepared(s: Stack) -> list[dict[str, Any]]:
    """Alarms registered by every owner for each server, known to every notifier;
    returns the servers."""
    await eventually(lambda: standing(s), timeout=30, what="replicas standing by")
    alarms = await s.register_alarms(concurrency=16)
    assert len(alarms) == SPEC.vms

    async def synced() -> bool:
        return all(h["alarms"] == len(alarms) for h in await health(s, "notifier"))

    await eventually(synced, timeout=30, what="notifiers know every alarm")
    servers: list[dict[str, Any]] = await s.get("/v1/servers")
    return servers


def owners_of(servers: list[dict[str, Any]], hosts: list[str]) -> set[tuple[str, str]]:
    return {(v["project_id"], v["id"]) for v in servers if v["host"] in hosts}


def dsn(database: str) -> str:
    return make_url(pg.url_for(database)).set(drivername="postgresql").render_as_string(False)


class TableLock:
    """A lock the test holds on one of the service's tables, as a busy database would:
    whoever needs the table in a conflicting mode waits until `release()`."""

    def __init__(self, database: str, table: str, mode: str) -> None:
        self.database = database
        self.table = table
        self.mode = mode
        self._holder: asyncpg.Connection | None = None
        self._observer: asyncpg.Connection | None = None

    async def __aenter__(self) -> TableLock:
        self._holder = await asyncpg.connect(dsn(self.database))
        # pg_stat_activity is read from a second connection: inside a transaction it
        # would be one snapshot, however long the test polls.
        self._observer = await asyncpg.connect(dsn(self.database))
        await self._holder.execute("BEGIN")
        await self._holder.execute(f"LOCK TABLE {self.table} IN {self.mode} MODE")
        return self

    async def waiting(self, application: str) -> int:
        """How many sessions named `application` wait for a lock in a statement on the
        locked table."""
        assert self._observer is not None
        rows = await self._observer.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
            " AND wait_event_type = 'Lock'",
            self.database,
            application,
        )
        table = re.compile(rf"\b{self.table}\b")
        return sum(table.search(r["query"]) is not None for r in rows)

    async def activity(self) -> list[tuple[str, str, str]]:
        """Every other session of the database: who, what it waits for, its statement."""
        assert self._observer is not None
        rows = await self._observer.fetch(
            "SELECT application_name, wait_event_type, query FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        )
        return [(r[0], str(r[1]), r[2][:60]) for r in rows]

    async def release(self) -> None:
        if self._holder is not None and not self._holder.is_closed():
            await self._holder.execute("ROLLBACK")
            await self._holder.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        if self._observer is not None:
            await self._observer.close()


@dataclass(frozen=True)
class Kill:
    """Where the victim's handling is held when it is killed."""

    role: str
    table: str
    mode: str
    # Whose owners have been told at the kill, given the hosts each partition handles
    # first (the victim and its peer are both held, each on its own partitions).
    told_at_kill: Callable[[list[str]], list[str]]
    # The messages the role's replicas hold unacked at the kill: the storm's events
    # come as one batch per partition, handled in order; the faults' notification
    # requests one per fault, each host's handled beside the others'.
    unacked: int
    shared_wait: bool = False  # the role's handlers wait in one statement per process


CASES = {
    # The inspector handed the notifications over and waits to record the fault: the
    # standby handles the event again and hands them over again; the notifier, which
    # has the alarms fired already, must not tell anyone twice. A process's faults are
    # saved together (group commit): each process waits in one statement.
    "inspector-after-handover": Kill(
        "inspector",
        "faults",
        "SHARE",
        lambda first: first,
        unacked=PARTITIONS,
        shared_wait=True,
    ),
    # The notifier waits to take up the alarm changes before matching: nothing it holds
    # has been sent, the standby sends it all, once.
    "notifier-before-sending": Kill(
        "notifier",
        "alarm_history",
        "ACCESS EXCLUSIVE",
        lambda _: [],
        unacked=len(FAILED),
        shared_wait=True,
    ),
    # The notifier sent its callbacks, stored them in the outbox, and waits to record
    # the alarms' new states: the standby gets the messages again, flagged redelivered,
    # finds their callbacks in the outbox and does not send them again. A process's
    # handlers write together (group commit): each process waits in one statement, and
    # every fault's owners have been told.
    "notifier-after-outbox": Kill(
        "notifier",
        "alarm_history",
        "SHARE",
        lambda _: FAILED,
        unacked=len(FAILED),
        shared_wait=True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_replica_killed_holding_unacked_work_tells_each_owner_once(
    case: str, tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    """Kill one inspector or notifier while the broker shows it holding unacknowledged
    messages: each owner of a failed host's servers gets exactly one callback."""
    kill = CASES[case]
    database = await pg_databases.take()
    prefix = names.bus_prefix(["events", remote.NOTIFICATIONS_TOPIC], PARTITIONS)
    env = service_env(database, amqp_url, prefix)
    try:
        async with running_stack(SPEC, tmp_path, env, replicas=REPLICAS) as s:
            servers = await prepared(s)
            expected = owners_of(servers, FAILED)
            members = [m for m in cluster(s).members.values() if m.role == kill.role]
            first = first_per_partition(FAILED)
            want_told = owners_of(servers, kill.told_at_kill(first))

            async with TableLock(database, kill.table, kill.mode) as lock:
                resp = await s.http.put(s.api + "/events", json=storm("down"), headers=s.monitor)
                assert resp.status == 202, resp.body

                # Both replicas of the role are held on the first message of each
                # partition they consume; the owners told so far are exactly those
                # expected at this step.
                seen: dict[str, int] = {}

                async def held() -> bool:
                    for m in members:
                        seen[m.name] = await lock.waiting(f"opendoctor-{m.name} pid {m.pid}")
                    if kill.shared_wait:
                        # One statement at a time per process for all its handlers
                        # (one take-up of alarm changes; one group commit): each
                        # process waits in one at least.
                        if min(seen[m.name] for m in members) < 1:
                            return False
                    elif sum(seen[m.name] for m in members) != PARTITIONS:
                        return False
                    seen["told"] = len(set(counts(await arrivals(s))))
                    return seen["told"] == len(want_told)

                try:
                    await eventually(held, timeout=60, what=f"the {kill.role}s held")
                except AssertionError as exc:
                    activity = await lock.activity()
                    raise AssertionError(
                        f"{exc}: {seen}, want {len(want_told)}; {activity}"
                    ) from None

                # The broker sees the role's replicas hold every message of the step
                # unacked; the victim is the one that holds the most.
                unacked: dict[int, int] = {}

                async def holding() -> bool:
                    unacked.clear()
                    unacked.update(await unacked_by_process())
                    return sum(unacked.get(m.pid, 0) for m in members) == kill.unacked

                await eventually(holding, timeout=60, what=f"the {kill.role}s holding work")
                victim = max(members, key=lambda m: unacked.get(m.pid, 0))
                if not kill.shared_wait:
                    assert seen[victim.name] == unacked[victim.pid]
                assert set(counts(await arrivals(s))) == want_told
                cluster(s).kill(victim.name)
                await lock.release()

            async def everyone() -> bool:
                return set(counts(await arrivals(s))) >= expected

            await eventually(everyone, timeout=60, what="every owner told")
            await settled(s, FAILED, expected, prefix)
            assert_told_once(await arrivals(s), expected)
            alive = {n: pid_alive(m.pid) for n, m in cluster(s).members.items()}
            assert alive == {n: n != victim.name for n in alive}

            # Every fault clears; nobody is told anything more.
            resp = await s.http.put(s.api + "/events", json=storm("up"), headers=s.monitor)
            assert resp.status == 202, resp.body

            async def cleared() -> bool:
                return await s.get("/v1/faults?status=active") == []

            await eventually(cleared, timeout=30, what="every fault cleared")
            await settled(s, FAILED, expected, prefix)
            assert_told_once(await arrivals(s), expected)
    finally:
        await pg_databases.give_back(database)


async def settled(
    s: Stack,
    hosts: list[str],
    expected: set[tuple[str, str]],
    prefix: str,
    node: PrivateRabbit | None = None,
) -> None:
    """Wait until the work is done and recorded: the alarms of the failed hosts' servers
    fired (no other), one fault per failed host, nothing pending in the outbox, and
    nothing left on the bus (whatever a redelivery would still send has been handled)."""
    hurt = {server for _, server in expected}

    async def fired() -> bool:
        alarms = await s.get("/v2/alarms")
        states = {a["event_rule"]["query"][0]["value"]: a["state"] for a in alarms}
        return {v for v, state in states.items() if state == "alarm"} == hurt

    await eventually(fired, timeout=30, what="the alarms of the failed servers fired")
    faults = await s.get("/v1/faults?limit=1000")
    assert sorted(f["hostname"] for f in faults) == sorted(hosts)

    async def delivered() -> bool:
        return await s.get("/v1/notifications?status=pending", headers=ADMIN) == []

    await eventually(delivered, timeout=30, what="nothing pending in the outbox")

    async def drained() -> bool:
        return not any((await queued(prefix, node)).values())

    await eventually(drained, timeout=60, what="every bus queue empty")
