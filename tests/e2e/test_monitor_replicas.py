"""Monitor replicas on a shared PostgreSQL lease: one probes; when it is killed (-9),
another takes over within a few seconds and the next host failure is still caught."""

from __future__ import annotations

import time
from pathlib import Path

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.spec import LabSpec
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.tools.stack import running_stack, wait_for
from tests import pg

SPEC = LabSpec(hosts=3, vms=3, projects=["project-a"], ip_prefix="127.68")
TTL = 1.5


async def test_a_killed_monitor_leader_is_replaced(
    tmp_path: Path, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    url = pg.url_for(database)
    env = {"OPENDOCTOR_MONITOR__ENABLED": "false", "OPENDOCTOR_DATABASE_URL": url}
    db = Database(url)
    try:
        async with running_stack(SPEC, tmp_path, env) as s:

            def replica(i: int) -> ChildProcess:
                return ChildProcess.python(
                    f"monitor-{i}",
                    "opendoctor",
                    ["monitor", "--api", s.api, "--lease", "main"],
                    tmp_path,
                    {
                        "OPENDOCTOR_VIM__LAB_URL": s.lab.url,
                        **s.monitor_env(),
                        "OPENDOCTOR_STATE_DIR": str(tmp_path / f"m{i}"),
                        "OPENDOCTOR_DATABASE_URL": url,
                        "OPENDOCTOR_MONITOR__LEASE_TTL": str(TTL),
                    },
                )

            leases = LeaseStore(db)
            async with replica(1) as one, replica(2) as two:
                first = await wait_for("a leader", lambda: leases.holder("monitor:main"), 10)
                pids = {str(p.proc.pid): p for p in (one, two) if p.proc is not None}
                leader = pids[first.split(":")[1]]

                leader.kill()
                killed = time.monotonic()

                async def successor() -> str | None:
                    holder = await leases.holder("monitor:main")
                    return holder if holder not in (None, first) else None

                second = await wait_for("another leader", successor, 10)
                took = time.monotonic() - killed
                assert second.split(":")[1] != first.split(":")[1]
                # The lease runs out (TTL), then the next attempt (TTL / 3) takes it.
                assert took < TTL + TTL / 3 + 1.0, f"takeover took {took:.2f} s"
                print(f"monitor takeover after kill -9: {took:.2f} s (lease ttl {TTL} s)")

                # The new leader probes: a host failure now is still detected.
                await s.lab.client.fail_host("compute1")

                async def detected() -> bool:
                    active = await s.get("/v1/faults?status=active")
                    return any(f["hostname"] == "compute1" for f in active)

                await wait_for("compute1's failure detected", detected, 10)
    finally:
        await db.close()
        await pg_databases.give_back(database)
