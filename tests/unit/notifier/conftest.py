"""Fixtures for the alarm tests: a real database (SQLite and PostgreSQL: `db_url`), the
service over it, an API client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from opendoctor.api.alarms import router
from opendoctor.api.errors import install_error_handlers
from opendoctor.core.settings import Settings
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.index import AlarmIndex
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.db import Database
from tests.conftest import MONITOR


@pytest.fixture
def store(db: Database) -> AlarmStore:
    return AlarmStore(db)


@pytest.fixture
async def service(store: AlarmStore) -> AlarmService:
    svc = AlarmService(store, AlarmIndex())
    await svc.load()
    return svc


def build_app(service: AlarmService, state_dir: Path) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.settings = Settings(state_dir=state_dir)
    app.state.alarms = service
    app.include_router(router)
    return app


@pytest.fixture
async def client(service: AlarmService, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(service, tmp_path))
    async with httpx.AsyncClient(transport=transport, headers=MONITOR, base_url="http://test") as c:
        yield c
