"""An embedded service over an in-memory VIM, with a real consumer on a real socket."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server, iso
from opendoctor.core.settings import Settings
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.consumer import ARRIVALS, RECEIVED, make_app
from tests.conftest import MONITOR
from tests.tcpproxy import free_port

PROJECT_A, PROJECT_B = "project-a", "project-b"


def lab_vim() -> MemoryVim:
    hosts = [Host(f"compute{i}", f"127.0.1.{i}", 4100) for i in (1, 2, 3)]
    servers = [
        Server(
            f"00000000-0000-0000-0000-00000000000{j}",
            f"vm{j}",
            f"compute{(j - 1) % 3 + 1}",
            PROJECT_A if j % 2 else PROJECT_B,
        )
        for j in range(1, 7)
    ]
    return MemoryVim(hosts, servers)


def opted_in(vim: MemoryVim) -> MemoryVim:
    """`vim` with every server opted in to recovery (HA_Enabled=True), as hosts in a
    failover segment need (core.segments)."""
    for server in vim.servers.values():
        server.metadata["HA_Enabled"] = "True"
    return vim


@dataclass
class Consumer:
    url: str
    app: web.Application
    runner: web.AppRunner | None = None

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.app[RECEIVED]

    @property
    def arrivals(self) -> list[dict[str, Any]]:
        """Every callback as it came, repeats included (see `opendoctor.tools.consumer`)."""
        return self.app[ARRIVALS]

    async def start(self, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    port = free_port()
    c = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    await c.start(port)
    yield c
    await c.stop()


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "state_dir": tmp_path,
        "monitor": {"enabled": False},
        "notifier": {"backoff_initial": 0.05, "backoff_max": 0.2, "timeout": 1.0},
        # The in-memory VIM's hosts have no BMCs: evacuated unfenced (test_fencing.py
        # gives them the lab's).
        "recovery": {"serve_timeout": 2.0, "fencing": {"without_device": "evacuate"}},
        # Faults clear on the first `up` here; test_flapping.py holds them down.
        "inspector": {"hold_down": 0},
    }
    for name, value in kw.items():
        both = isinstance(value, dict) and isinstance(base.get(name), dict)
        base[name] = {**base[name], **value} if both else value
    return Settings(**base)


@dataclass
class Running:
    service: Service
    vim: MemoryVim
    client: httpx.AsyncClient


@asynccontextmanager
async def serving(settings: Settings, vim: MemoryVim) -> AsyncIterator[Running]:
    """The service started, with a client of its API (as a monitor); stopped after."""
    service = Service(settings, vim=vim)
    await service.start()
    try:
        transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
        async with httpx.AsyncClient(
            transport=transport, headers=MONITOR, base_url="http://opendoctor"
        ) as client:
            yield Running(service, vim, client)
    finally:
        await service.stop()


@pytest.fixture
async def running(tmp_path: Path, db_url: str) -> AsyncIterator[Running]:
    """The service on each engine of the store (`db_url`: SQLite, then PostgreSQL)."""
    async with serving(settings_for(tmp_path, database_url=db_url), lab_vim()) as r:
        yield r


def alarm_for(server_id: str, url: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"failure-{server_id[-4:]}",
        "type": "event",
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {"field": "traits.instance_id", "op": "eq", "value": server_id},
                {"field": "traits.state", "op": "eq", "value": "error"},
            ],
        },
    }
    body.update(kw)
    return body


def as_project(project: str) -> dict[str, str]:
    return {"X-Project-Id": project, "X-User-Id": "vnfm"}


ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin"}


def host_down(host: str, status: str = "down") -> dict[str, Any]:
    return {
        "time": iso(time.time()),
        "type": "compute.host.down",
        "details": {"hostname": host, "status": status, "monitor": "test", "monitor_event_id": "1"},
    }


@pytest.fixture
async def bmcs(tmp_path: Path) -> AsyncIterator[LabRunner]:
    """Hosts compute1..3 of a real lab, each with its BMC (Redfish, IPMI), named as the
    in-memory VIM's hosts are: the fencing tests power them off."""
    async with LabRunner(LabSpec(hosts=3, vms=0, ip_prefix="127.225"), tmp_path / "lab") as lab:
        yield lab
