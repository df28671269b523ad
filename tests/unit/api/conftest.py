"""The API in process (httpx over ASGI) in each auth mode, over an in-memory VIM, with a
real consumer on a real socket to show what a fault reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.tools.consumer import make_app
from tests.integration.pipeline.conftest import Consumer, free_port, lab_vim, settings_for

TOKENS: dict[str, dict[str, Any]] = {
    "tok-vnfm-a": {"project_id": "project-a", "user_id": "vnfm-a", "roles": ["member"]},
    "tok-vnfm-b": {"project_id": "project-b", "user_id": "vnfm-b", "roles": ["member"]},
    "tok-operator": {"project_id": "admin", "user_id": "operator", "roles": ["admin"]},
}
TRUSTED = {
    "a": {"X-Project-Id": "project-a", "X-User-Id": "vnfm-a"},
    "b": {"X-Project-Id": "project-b", "X-User-Id": "vnfm-b"},
    "admin": {"X-Project-Id": "admin", "X-User-Id": "operator", "X-Roles": "admin"},
}
BY_TOKEN = {
    "a": {"X-Auth-Token": "tok-vnfm-a"},
    "b": {"X-Auth-Token": "tok-vnfm-b"},
    "admin": {"X-Auth-Token": "tok-operator"},
}
MONITOR_TOKEN = "monitor-s3cret"


@dataclass
class Api:
    mode: str
    service: Service
    client: httpx.AsyncClient
    consumer: Consumer

    def who(self, name: str) -> dict[str, str]:
        """The credentials of `a` (project-a), `b` (project-b) or `admin` in this mode."""
        return dict((BY_TOKEN if self.mode == "token" else TRUSTED)[name])

    @property
    def identity_field(self) -> str:
        return "X-Auth-Token" if self.mode == "token" else "X-Project-Id"


async def serving(tmp_path: Path, mode: str, southbound_token: str | None) -> AsyncIterator[Api]:
    api = {"auth_mode": mode, "tokens": TOKENS, "southbound_token": southbound_token}
    settings = settings_for(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/opendoctor.db", api=api
    )
    service = Service(settings, vim=lab_vim())
    await service.start()
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    await consumer.start(port)
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://od") as client:
            yield Api(mode, service, client, consumer)
    finally:
        await consumer.stop()
        await service.stop()


@pytest.fixture(params=["trusted-headers", "token"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The API in each auth mode, monitors with a token of their own."""
    async for running in serving(tmp_path, request.param, MONITOR_TOKEN):
        yield running


@pytest.fixture
async def open_southbound(tmp_path: Path) -> AsyncIterator[Api]:
    """The API with no southbound token configured."""
    async for running in serving(tmp_path, "trusted-headers", None):
        yield running
