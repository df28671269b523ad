"""A replica killed (SIGKILL) in the middle of a storm of host failures, in a cluster of
two processes per role on the real RabbitMQ and PostgreSQL: every owner still hears of
every server (at least once, a repeat with the same request id), and no fault or alarm
is left stuck."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from opendoctor.bus.amqp import partition_of
from opendoctor.lab.spec import LabSpec
from opendoctor.model import Event
from opendoctor.monitor.standalone import doctor_event
from opendoctor.notifier import remote
from opendoctor.stack import ADMIN, Stack, running_stack
from tests import pg
from tests.amqp.conftest import Names
from tests.conftest import eventually

HOSTS = 12
SPEC = LabSpec(
    hosts=HOSTS,
    vms=HOSTS * 10,
    projects=["project-a", "project-b"],
    ip_prefix="127.73",
    vm_mode="inline",
    heartbeat=False,
)
PARTITIONS = 4
FIRST, SECOND = range(1, HOSTS // 2 + 1), range(HOSTS // 2 + 1, HOSTS + 1)
# Replica 0 of 2 consumes the even partitions first; some hosts of the storm's second
# half land there, so that when it is killed the survivor must take them over.
assert any(partition_of(SPEC.host_name(i), PARTITIONS) % 2 == 0 for i in SECOND)


def storm(status: str, hosts: range = range(1, HOSTS + 1)) -> list[dict[str, Any]]:
    return [
        doctor_event(
            Event(
                type="compute.host.down",
                hostname=SPEC.host_name(i),
                status=status,
                time=time.time(),
                monitor="test-storm",
                monitor_event_id=f"{SPEC.host_name(i)}-{status}",
            )
        )
        for i in hosts
    ]


async def health(s: Stack, role: str) -> list[dict[str, Any]]:
    out = []
    for url in s.service.urls(role):  # type: ignore[union-attr]
        out.append((await s.http.get(url + "/health")).json())
    return out


@pytest.mark.parametrize("victim", ["inspector-0", "notifier-0"])
async def test_a_replica_killed_mid_storm_loses_no_notification(
    victim: str, tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    env = {
        "OPENDOCTOR_DATABASE_URL": pg.url_for(database),
        "OPENDOCTOR_BUS__KIND": "amqp",
        "OPENDOCTOR_BUS__URL": amqp_url,
        "OPENDOCTOR_BUS__PREFIX": names.bus_prefix(["events", remote.NOTIFICATIONS_TOPIC], 4),
        "OPENDOCTOR_BUS__PARTITIONS": str(PARTITIONS),
        "OPENDOCTOR_BUS__STANDBY_AFTER": "0.2",
        "OPENDOCTOR_BUS__RETRY_DELAY": "0.1",
        "OPENDOCTOR_MONITOR__ENABLED": "false",
        "OPENDOCTOR_RECOVERY__ENABLED": "false",
        "OPENDOCTOR_NOTIFIER__SYNC_INTERVAL": "0.1",
        "OPENDOCTOR_NOTIFIER__BACKOFF_INITIAL": "0.05",
        "OPENDOCTOR_LOG_LEVEL": "WARNING",
    }
    try:
        async with running_stack(SPEC, tmp_path, env, replicas=2) as s:
            # Every partition has a consumer and a standby before the storm.
            async def standing() -> bool:
                for role in ("inspector", "notifier"):
                    for h in await health(s, role):
                        parts = next(iter(h["consuming"].values()), {"own": [], "standby": []})
                        if len(parts["own"]) + len(parts["standby"]) != PARTITIONS:
                            return False
                return True

            await eventually(standing, timeout=30, what="replicas standing by")
            alarms = await s.register_alarms(concurrency=16)
            servers = {a["event_rule"]["query"][0]["value"] for a in alarms}
            assert len(servers) == SPEC.vms

            async def synced() -> bool:
                return all(h["alarms"] == len(alarms) for h in await health(s, "notifier"))

            await eventually(synced, what="notifiers know every alarm")

            # Half the storm; once owners are being told, the kill; then the other half,
            # some of it bound for the partitions the killed replica had.
            resp = await s.http.put(s.api + "/events", json=storm("down", FIRST))
            assert resp.status == 202, resp.body

            async def some() -> bool:
                return any((await s.received()).values())

            await eventually(some, what="the first owner told")
            s.service.kill(victim)  # type: ignore[union-attr]
            resp = await s.http.put(s.api + "/events", json=storm("down", SECOND))
            assert resp.status == 202, resp.body

            async def everyone() -> dict[str, list[dict[str, Any]]] | None:
                got = await s.received()
                told = {r["instance_id"] for rs in got.values() for r in rs}
                return got if told == servers else None

            got = await eventually(everyone, timeout=60, what="every owner told")
            for project, records in got.items():
                # Recorded once each: a repeat came with the request id of the first.
                ids = [r["request_id"] for r in records]
                assert len(ids) == len(set(ids)) == len({r["instance_id"] for r in records})
                assert all(r["project_id"] == project for r in records)
                repeats = (await s.http.get(s.consumers[project].ready + "/repeats")).json()
                assert set(repeats) <= set(ids)

            # No alarm is stuck: each fired once, and every fault clears.
            async def fired() -> bool:
                listed = await s.get("/v2/alarms")
                return {a["state"] for a in listed} == {"alarm"}

            await eventually(fired, what="every alarm in state alarm")
            active = await s.get("/v1/faults?status=active&limit=1000")
            assert sorted(f["hostname"] for f in active) == sorted(
                SPEC.host_name(i) for i in range(1, HOSTS + 1)
            )
            resp = await s.http.put(s.api + "/events", json=storm("up"))
            assert resp.status == 202, resp.body

            async def cleared() -> bool:
                return await s.get("/v1/faults?status=active") == []

            await eventually(cleared, timeout=30, what="every fault cleared")
            pending = await s.get("/v1/notifications?status=pending", headers=ADMIN)
            assert pending == []
    finally:
        await pg_databases.give_back(database)
