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
from tests.conftest import MONITOR_TOKENS_ENV
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
MONITOR_NAME, MONITOR_TOKEN = "doctor-monitor", "monitor-s3cret"


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


async def serving(tmp_path: Path, mode: str, **api_settings: Any) -> AsyncIterator[Api]:
    api = {"auth_mode": mode, "tokens": TOKENS, **api_settings}
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


@pytest.fixture(autouse=True)
def only_these_monitors(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests say which monitors the service knows: not the test suite's own."""
    monkeypatch.delenv(MONITOR_TOKENS_ENV)


@pytest.fixture(params=["trusted-headers", "token"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The API in each auth mode, one monitor with a token of its own."""
    monitors = {MONITOR_NAME: MONITOR_TOKEN}
    async for running in serving(tmp_path, request.param, monitor_tokens=monitors):
        yield running


@pytest.fixture
async def no_monitors(tmp_path: Path) -> AsyncIterator[Api]:
    """The API as it starts with nothing said about monitors."""
    async for running in serving(tmp_path, "trusted-headers"):
        yield running


@pytest.fixture
async def anonymous_monitors(tmp_path: Path) -> AsyncIterator[Api]:
    """The API told to take reports from monitors without a token."""
    async for running in serving(tmp_path, "trusted-headers", anonymous_monitors=True):
        yield running
