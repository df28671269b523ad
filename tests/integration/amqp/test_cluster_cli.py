"""`opendoctor cluster up | status | down`, as a user runs them, against a running lab."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.notifier import remote
from tests import pg
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names

TTL = 1.5  # the monitors' lease, seconds
SPEC = LabSpec(hosts=2, vms=2, ip_prefix="127.75", vm_mode="inline", heartbeat=False)


async def opendoctor(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opendoctor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **env},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cluster_up_status_and_down(tmp_path: Path, amqp_url: str, names: Names) -> None:
    database = f"od_{uuid.uuid4().hex[:16]}"  # cluster up creates it
    url = pg.url_for(database)
    prefix = names.bus_prefix(["events", remote.NOTIFICATIONS_TOPIC], 8)
    directory = tmp_path / "cluster"
    env = {"OPENDOCTOR_CLUSTER_DIR": str(directory), "XDG_STATE_HOME": str(tmp_path / "state")}
    try:
        async with LabRunner(SPEC, tmp_path / "lab") as lab:
            args = ["--replicas", "2", "--database-url", url, "--amqp-url", amqp_url]
            args += ["--prefix", prefix, "--lab-url", lab.url]
            args += ["--set", f"OPENDOCTOR_MONITOR__LEASE_TTL={TTL}"]
            code, out, err = await opendoctor("cluster", "up", *args, env=env)
            assert code == 0, out + err
            assert f"created database {database}" in err
            for role in ("api", "inspector", "notifier", "monitor"):
                assert f"{role}-0" in out and f"{role}-1" in out
            # The lab's hosts report their VMs' faults to the first api member.
            members = json.loads((directory / "cluster.json").read_text())["members"]
            (api0,) = [m["url"] for m in members if m["name"] == "api-0"]
            assert (await lab.client.events_sink())["url"] == api0 + "/events"

            code, out, err = await opendoctor("cluster", "up", *args, env=env)
            assert code == 1 and "already running" in err

            code, out, err = await opendoctor("cluster", "status", "--json", env=env)
            assert code == 0, err
            rows = json.loads(out)
            assert len(rows) == 8 and all(r["alive"] for r in rows)
            assert {r["health"]["status"] for r in rows} == {"ok"}
            assert {tuple(r["health"]["roles"]) for r in rows} == {
                ("api",),
                ("inspector",),
                ("notifier",),
                ("monitor",),
            }
            # One monitor probes; the other waits to take over.
            monitors = [r for r in rows if r["role"] == "monitor"]
            assert sorted(r["health"]["probing"] for r in monitors) == [False, True]

            # The leader killed: the other takes over within about the lease's ttl.
            (leader,) = [r for r in monitors if r["health"]["probing"]]
            (other,) = [r for r in monitors if not r["health"]["probing"]]
            os.killpg(leader["pid"], signal.SIGKILL)
            killed = time.monotonic()

            async def leads() -> bool:
                code, out, _ = await opendoctor("cluster", "status", "--json", env=env)
                now = {r["name"]: r for r in json.loads(out)}
                return code == 1 and now[other["name"]]["health"].get("probing") is True

            await eventually(leads, timeout=10, what="the other monitor leading")
            took = time.monotonic() - killed
            assert took < TTL + TTL / 3 + 2.0, f"takeover took {took:.2f} s"
            print(f"monitor leader takeover in a cluster after kill -9: {took:.2f} s (ttl {TTL})")

            code, out, err = await opendoctor("cluster", "down", env=env)
            assert code == 0 and "stopped 8 members" in out, out + err
            assert not (directory / "cluster.json").exists()
            code, out, err = await opendoctor("cluster", "status", env=env)
            assert code == 1 and "no cluster is running" in err
    finally:
        await opendoctor("cluster", "down", env=env)
        await pg.drop_database(database)
