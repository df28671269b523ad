"""`opendoctor serve` with its HTTP front in a process of its own (`api.front_loop =
"process"`), set the way docs/configuration.md says: the monitor's token reaches the front
process (never on its command line), an event reaches the owner, and SIGTERM stops both
processes as it stops one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from opendoctor.infra.procs import ChildProcess, pid_alive
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.consumer import make_app
from tests.conftest import eventually
from tests.integration.pipeline.conftest import Consumer, alarm_for, free_port, host_down

SPEC = LabSpec(hosts=2, vms=2, projects=["project-a"], ip_prefix="127.96")
TOKEN = "monitor-secret-in-the-environment"
ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin"}


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode()


async def test_a_service_whose_front_is_a_process(tmp_path: Path) -> None:
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    await consumer.start(port)
    try:
        async with LabRunner(SPEC, tmp_path / "lab") as lab:
            env = {
                "OPENDOCTOR_STATE_DIR": str(tmp_path / "service"),
                "OPENDOCTOR_VIM__LAB_URL": lab.url,
                "OPENDOCTOR_API__PORT": "0",
                "OPENDOCTOR_API__FRONT_LOOP": "process",
                "OPENDOCTOR_API__MONITOR_TOKENS": json.dumps({"doctor": TOKEN}),
                "OPENDOCTOR_MONITOR__ENABLED": "false",
                "OPENDOCTOR_RECOVERY__ENABLED": "false",
            }
            service = ChildProcess.python("service", "opendoctor", ["serve"], tmp_path, env)
            async with service, httpx.AsyncClient(base_url=service.ready, timeout=10) as api:
                assert service.proc is not None
                [front] = children(service.proc.pid)
                assert "opendoctor.app.front_process" in command_line(front)
                assert TOKEN not in command_line(front)

                vm1 = next(v for v in await lab.client.servers() if v.name == "vm1")
                owner = {"X-Project-Id": vm1.project_id, "X-Roles": "member"}
                body = alarm_for(vm1.id, consumer.url + "/failure")
                resp = await api.post("/v2/alarms", json=body, headers=owner)
                assert resp.status_code == 201, resp.text

                report = [host_down(vm1.host)]
                resp = await api.put("/events", json=report, headers={"X-Auth-Token": "wrong"})
                assert resp.status_code == 401
                resp = await api.put("/events", json=report, headers={"X-Auth-Token": TOKEN})
                assert resp.status_code == 202, resp.text
                await eventually(lambda: len(consumer.received) == 1, what="vm1's owner told")
                assert consumer.received[0]["instance_id"] == vm1.id
                (event,) = (await api.get("/v1/events", headers=ADMIN)).json()
                assert event["reporter"] == "doctor"

                os.kill(service.proc.pid, signal.SIGTERM)
                await eventually(lambda: service.proc.poll() is not None, what="service ended")
                assert service.proc.returncode == -signal.SIGTERM
                assert not pid_alive(front)
                assert "Traceback" not in service.tail(200)
    finally:
        await consumer.stop()
