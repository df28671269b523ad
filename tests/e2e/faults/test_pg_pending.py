"""PostgreSQL goes away while some owners' notifications are still pending.

A service on PostgreSQL (`opendoctor serve`, a child process, on a real lab) with every
project's consumer running, except one whose endpoint is down: a host fails, the other
owners are told at once, that one's notifications wait in the outbox for a retry. Then
the database stops (cleanly, or crashes), the owner's endpoint comes back meanwhile, and
the database starts again. The owner gets each notification once it can be delivered,
exactly once, and nobody else hears of it; the service went through it all without a
restart. The database is a private server of the test (`private_pg.py`): the machine's
shared one serves the other tests running at the same time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import ADMIN, running_stack
from tests.conftest import eventually
from tests.e2e.faults.owners import arrivals, assert_told_once
from tests.e2e.faults.private_pg import StopMode, private_postgres
from tests.integration.pipeline.conftest import host_down
from tests.pg import assert_database_down
from tests.tcpproxy import free_port

SPEC = LabSpec(
    hosts=3,
    vms=6,
    projects=["project-a", "project-b"],
    ip_prefix="127.87",
    vm_mode="inline",
    heartbeat=False,
)
FAILED = "compute1"
LATE = "project-b"  # the owner whose endpoint is down when the host fails
# Deadlines (seconds) of the polls below; each is met in a few seconds when all is well
# (a retry claimed just before the stop is due again 2 * timeout + 5 s after its claim).
SETTLE = 30.0
RECOVER = 60.0


def service_env(database_url: str) -> dict[str, str]:
    return {
        "OPENDOCTOR_DATABASE_URL": database_url,
        # The test reports the fault, as a monitor would: a heartbeat monitor on this
        # busy machine could report a slow host too, and tell owners the test does not
        # expect. Nothing is evacuated either: only the notifications are under test.
        "OPENDOCTOR_MONITOR__ENABLED": "false",
        "OPENDOCTOR_RECOVERY__ENABLED": "false",
        # Retries come often, and never give up during the outage.
        "OPENDOCTOR_NOTIFIER__BACKOFF_INITIAL": "0.2",
        "OPENDOCTOR_NOTIFIER__BACKOFF_MAX": "0.5",
        "OPENDOCTOR_NOTIFIER__MAX_ATTEMPTS": "100000",
    }


async def notifications(client: httpx.AsyncClient, status: str | None = None) -> Any:
    params = {"status": status} if status else {}
    resp = await client.get("/v1/notifications", params=params, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("stop", ["fast", "immediate"])
async def test_notifications_pending_while_postgresql_is_down_reach_their_owner_once(
    tmp_path: Path, stop: StopMode
) -> None:
    """Stop PostgreSQL (`fast`: a clean shutdown; `immediate`: a crash) while an owner's
    notifications wait for a retry: once it is back, that owner is told, exactly once."""
    ports = {project: free_port() for project in SPEC.projects}
    async with private_postgres() as server:
        await server.create_database("opendoctor")
        async with (
            running_stack(
                SPEC,
                tmp_path,
                service_env(server.service_url("opendoctor")),
                consumer_args=lambda project: ["--port", str(ports[project])],
            ) as s,
            httpx.AsyncClient(base_url=s.api, headers=s.monitor, timeout=30) as client,
        ):
            service = s.service
            assert isinstance(service, ChildProcess) and service.proc is not None
            pid = service.proc.pid
            servers = (await client.get("/v1/servers", headers=ADMIN)).json()
            hurt = [v for v in servers if v["host"] == FAILED]
            # Both owners have a server on the failed host: one told at once, one late.
            assert {v["project_id"] for v in hurt} == set(SPEC.projects), servers
            alarms = await s.register_alarms()
            alarm_of = {a["event_rule"]["query"][0]["value"]: a["alarm_id"] for a in alarms}
            late = {alarm_of[v["id"]] for v in hurt if v["project_id"] == LATE}

            consumer = s.consumers[LATE]
            url = consumer.ready
            await consumer.stop()
            resp = await client.put("/events", json=[host_down(FAILED)])
            assert resp.status_code == 202, resp.text

            async def waiting() -> list[dict[str, Any]]:
                entries: list[dict[str, Any]] = await notifications(client, "pending")
                return entries if {e["alarm_id"] for e in entries} == late else []

            # Pending, in the database: tried once at least, failed, a retry scheduled.
            for entry in await eventually(waiting, SETTLE, "the late owner's retries pending"):
                assert entry["attempts"] >= 1 and entry["last_error"], entry
                assert entry["delivered"] is None and entry["url"].startswith(url), entry

            await server.stop(stop)
            assert not await server.answers(), "the private PostgreSQL still answers"
            # What needs the database is refused cleanly; the process lives on.
            assert_database_down(await client.get("/v1/notifications", headers=ADMIN))
            health = await client.get("/health")
            assert health.status_code == 200, health.text

            # The owner's endpoint is back, at the same address, while the database is not.
            assert await consumer.start() == url
            assert service.proc.poll() is None, "the service died in the outage"

            await server.start()

            async def all_delivered() -> bool:
                resp = await client.get("/v1/notifications", headers=ADMIN)
                if resp.status_code != 200:
                    assert resp.status_code == 503, resp.text  # the pool reconnecting
                    return False
                entries = resp.json()
                return bool(entries) and all(e["status"] == "delivered" for e in entries)

            await eventually(all_delivered, RECOVER, "every notification delivered")
            # Recorded as delivered: no retry sends anything any more, the counts are final.
            assert await notifications(client, "pending") == []
            entries = await notifications(client)
            assert {e["alarm_id"] for e in entries} == {alarm_of[v["id"]] for v in hurt}
            assert_told_once(await arrivals(s), [(v["project_id"], v["id"]) for v in hurt])

            states = {
                a["alarm_id"]: (
                    await client.get(f"/v2/alarms/{a['alarm_id']}", headers=ADMIN)
                ).json()["state"]
                for a in alarms
            }
            fired = {alarm_of[v["id"]] for v in hurt}
            assert {states[a] for a in fired} == {"alarm"}, states
            assert "alarm" not in {states[a] for a in states.keys() - fired}, states
            # The same process all along.
            assert service.proc.poll() is None and service.proc.pid == pid
