"""Token mode in a real `opendoctor serve`, configured the way docs/configuration.md says:
tokens in the TOML file, a setting overridden by an `OPENDOCTOR_*` variable."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.consumer import make_app
from tests.conftest import eventually
from tests.integration.pipeline.conftest import Consumer, alarm_for, free_port, host_down

SPEC = LabSpec(hosts=2, vms=2, projects=["project-a", "project-b"], ip_prefix="127.94")

CONFIG = """
[api]
auth_mode = "token"

[api.monitor_tokens]
doctor = "from-the-file"

[api.tokens.tok-vnfm-a]
project_id = "project-a"
user_id = "vnfm-a"
roles = ["member"]

[api.tokens.tok-operator]
project_id = "admin"
user_id = "operator"
roles = ["admin"]
"""
ENV_MONITOR_TOKEN = "from-the-environment"


def private(path: Path) -> bool:
    return path.exists() and path.stat().st_mode & 0o077 == 0


async def test_a_service_in_token_mode_started_from_its_config_file(tmp_path: Path) -> None:
    """An operator who writes the documented [api] table and overrides the monitors'
    token in the environment gets a service that knows callers only by their tokens."""
    config = tmp_path / "opendoctor.toml"
    config.write_text(CONFIG)
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    await consumer.start(port)
    try:
        await _token_mode_from_the_file(tmp_path, config, consumer)
    finally:
        await consumer.stop()


async def _token_mode_from_the_file(tmp_path: Path, config: Path, consumer: Consumer) -> None:
    async with LabRunner(SPEC, tmp_path / "lab") as lab:
        env = {
            "OPENDOCTOR_STATE_DIR": str(tmp_path / "service"),
            "OPENDOCTOR_VIM__LAB_URL": lab.url,
            "OPENDOCTOR_API__PORT": "0",
            "OPENDOCTOR_API__MONITOR_TOKENS": json.dumps({"doctor": ENV_MONITOR_TOKEN}),
            # The report below is made up: the host is alive and must stay where it is.
            "OPENDOCTOR_MONITOR__ENABLED": "false",
            "OPENDOCTOR_RECOVERY__ENABLED": "false",
        }
        service = ChildProcess.python(
            "service", "opendoctor", ["serve", "--config", str(config)], tmp_path, env
        )
        async with service, httpx.AsyncClient(base_url=service.ready, timeout=10) as api:
            vm1 = next(v for v in await lab.client.servers() if v.name == "vm1")
            trusted = {"X-Project-Id": vm1.project_id, "X-Roles": "admin"}
            resp = await api.get("/v2/alarms", headers=trusted)
            assert resp.status_code == 401
            assert resp.json()["error"]["errors"][0]["field"] == "X-Auth-Token"
            resp = await api.get("/v2/alarms", headers={"X-Auth-Token": "tök".encode()})
            assert resp.status_code == 401

            as_a = {"X-Auth-Token": "tok-vnfm-a", "X-Project-Id": "project-b"}
            body = alarm_for(vm1.id, consumer.url + "/failure")
            resp = await api.post("/v2/alarms", json=body, headers=as_a)
            assert resp.status_code == 201, resp.text
            assert resp.json()["project_id"] == "project-a"
            faults = await api.get("/v1/faults", headers=as_a)
            assert faults.status_code == 403

            report = [host_down(vm1.host)]
            for token in ("", "from-the-file", "tok-operator"):
                resp = await api.put("/events", json=report, headers={"X-Auth-Token": token})
                assert resp.status_code == 401, token
            operator = {"X-Auth-Token": "tok-operator"}
            assert (await api.get("/v1/events", headers=operator)).json() == []
            assert consumer.received == []

            resp = await api.put(
                "/events", json=report, headers={"X-Auth-Token": ENV_MONITOR_TOKEN}
            )
            assert resp.status_code == 202, resp.text
            await eventually(lambda: len(consumer.received) == 1, what="vm1's owner told")
            assert consumer.received[0]["instance_id"] == vm1.id
            (event,) = (await api.get("/v1/events", headers=operator)).json()
            assert event["reporter"] == "doctor"
            # What the service wrote is its user's alone.
            assert private(tmp_path / "service" / "opendoctor.db")
