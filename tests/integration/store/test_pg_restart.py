"""Restart a real PostgreSQL under a running service (`opendoctor serve`, a child process,
on a real lab): while the server is down, requests that need it get a clean 503 and the
process stays up; once it is back, the service serves again by itself, with nothing
restarted, and nothing accepted before the restart is lost.

Unlike tests/pipeline/test_db_outage.py (a TCP proxy cut in between), this stops the
server itself: its backends are terminated, its port closes, and it starts afresh. The
server is the test's own (`tests/faults/private_pg.py`), never the machine's shared one,
which the other tests running at the same time use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import ADMIN, Stack, alarm_body, owner, running_stack
from tests.conftest import eventually
from tests.e2e.faults.private_pg import PrivatePostgres, private_postgres
from tests.integration.pipeline.conftest import host_down
from tests.pg import assert_database_down

SPEC = LabSpec(hosts=2, vms=4, projects=["project-a", "project-b"], ip_prefix="127.72")
DATABASE = "opendoctor"
# Deadlines (seconds) of the polls below; each is met in well under a second when all is well.
SETTLE = 20.0
RECOVER = 10.0


async def stored(server: PrivatePostgres) -> dict[str, set[str]]:
    """What the database itself holds (not the service's memory): alarm, fault, event ids."""
    conn = await asyncpg.connect(server.url(DATABASE), timeout=5)
    try:
        return {
            table: {row[0] for row in await conn.fetch(f"SELECT {key} FROM {table}")}
            for table, key in (("alarms", "alarm_id"), ("faults", "id"), ("events", "id"))
        }
    finally:
        await conn.close()


async def fault_of(client: httpx.AsyncClient, host: str) -> dict[str, Any] | None:
    """`host`'s fault as stored (the list without a status filter reads the database)."""
    resp = await client.get("/v1/faults", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    return next((f for f in resp.json() if f["hostname"] == host), None)


async def notified(s: Stack, servers: list[dict[str, Any]]) -> bool:
    """Whether every one of `servers`' owners heard of it through its consumer."""
    got = {r["instance_id"] for rs in (await s.received()).values() for r in rs}
    return {v["id"] for v in servers} <= got


NOWHERE = "127.0.0.1:9"  # an action nobody answers (allowed: it is on loopback)


async def test_postgresql_restart_is_503_while_down_and_the_service_recovers_by_itself(
    tmp_path: Path,
) -> None:
    async with private_postgres() as postgres:
        await postgres.create_database(DATABASE)
        env = {"OPENDOCTOR_DATABASE_URL": postgres.service_url(DATABASE)}
        async with (
            running_stack(SPEC, tmp_path, env, egress_allow=[NOWHERE]) as s,
            httpx.AsyncClient(base_url=s.api, headers=s.monitor, timeout=10) as client,
        ):
            servers = (await client.get("/v1/servers", headers=ADMIN)).json()
            on = {h: [v for v in servers if v["host"] == h] for h in ("compute1", "compute2")}
            assert all(on.values()), servers

            # Before: alarms registered (one per VM, by its owner) and an event handled.
            alarms = await s.register_alarms()
            alarm_ids = {a["alarm_id"] for a in alarms}
            before = await client.put("/events", json=[host_down("compute1")])
            assert before.status_code == 202, before.text
            accepted = set(before.json()["accepted"])
            first = await eventually(
                lambda: fault_of(client, "compute1"), timeout=SETTLE, what="compute1's fault"
            )
            await eventually(
                lambda: notified(s, on["compute1"]), timeout=SETTLE, what="compute1's owners"
            )

            async def settled() -> bool:
                # Its handling over (recovery done, notifications out): nothing of it is
                # still writing when the server goes away.
                f = (await client.get(f"/v1/faults/{first['id']}", headers=ADMIN)).json()
                recovered = f["recovery"] and all(i["result"] != "pending" for i in f["recovery"])
                sent = all(n["status"] == "delivered" for n in f["notifications"])
                return bool(("T11" in f["trace"] or recovered) and f["notifications"] and sent)

            await eventually(settled, timeout=SETTLE, what="compute1's fault handled")
            kept = await stored(postgres)
            assert alarm_ids <= kept["alarms"] and first["id"] in kept["faults"]
            assert accepted <= kept["events"]

            await postgres.stop("fast")
            assert not await postgres.answers(), "the private PostgreSQL still answers"

            # Down: what needs the database is a clean 503 (no 500, no 202 for an event
            # that was not stored); what does not still answers; the process lives on.
            assert_database_down(await client.put("/events", json=[host_down("compute1")]))
            server = on["compute2"][0]
            assert_database_down(
                await client.post(
                    "/v2/alarms",
                    json=alarm_body(server, f"http://{NOWHERE}/never"),
                    headers=owner(server["project_id"]),
                )
            )
            assert_database_down(await client.get("/v1/faults", headers=ADMIN))
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            assert s.service.proc is not None and s.service.proc.poll() is None

            await postgres.start()  # returns once it accepts connections
            assert await postgres.answers()
            pg_back = time.monotonic()

            # Back: the same service process serves again by itself, nothing restarted.
            refused: list[int] = []

            async def serves() -> bool:
                status = (await client.get("/v1/faults", headers=ADMIN)).status_code
                if status != 200:
                    assert status == 503, f"HTTP {status} while recovering"
                    refused.append(status)
                return status == 200

            await eventually(serves, timeout=RECOVER, what="the service to serve again")
            recovery = time.monotonic() - pg_back
            print(
                f"\nservice served again {recovery * 1000:.1f} ms after PostgreSQL answered"
                f" ({len(refused)} request(s) refused with 503 in between)"
            )
            assert s.service.proc is not None and s.service.proc.poll() is None

            # A new event is accepted at once and handled all the way to the owners.
            after = await client.put("/events", json=[host_down("compute2")])
            assert after.status_code == 202, after.text
            accepted |= set(after.json()["accepted"])
            second = await eventually(
                lambda: fault_of(client, "compute2"), timeout=SETTLE, what="compute2's fault"
            )
            assert second["id"] != first["id"]
            await eventually(
                lambda: notified(s, on["compute2"]), timeout=SETTLE, what="compute2's owners"
            )
            fired = [
                (await client.get(f"/v2/alarms/{a['alarm_id']}", headers=ADMIN)).json()
                for a in alarms
                if a["event_rule"]["query"][0]["value"] in {v["id"] for v in on["compute2"]}
            ]
            assert {a["state"] for a in fired} == {"alarm"}

            # What was accepted before the restart is still there, and the alarm refused
            # during it is not: in the API and in the database itself.
            listed = (await client.get("/v2/alarms", headers=ADMIN)).json()
            assert {a["alarm_id"] for a in listed} == alarm_ids
            earlier = await client.get(f"/v1/faults/{first['id']}", headers=ADMIN)
            assert earlier.status_code == 200, earlier.text
            assert earlier.json()["hostname"] == "compute1"
            events = (await client.get("/v1/events", headers=ADMIN)).json()
            assert accepted <= {e["id"] for e in events}
            kept = await stored(postgres)
            assert kept["alarms"] == alarm_ids
            assert {first["id"], second["id"]} <= kept["faults"]
            assert accepted <= kept["events"]
