"""Shared test helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests import pg

T = TypeVar("T")

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[pg.Databases]:
    databases = pg.Databases()
    yield databases
    databases.drop_all()


@pytest.fixture(params=ENGINES)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: pg.Databases
) -> AsyncIterator[str]:
    """A database URL for each engine the store runs on: a new SQLite file, or an empty
    PostgreSQL database of this session (see `tests/pg.py`)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/opendoctor.db"
        return
    name = await pg_databases.take()
    try:
        yield pg.url_for(name)
    finally:
        await pg_databases.give_back(name)


async def eventually(
    check: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll until `check()` is truthy (a condition, not a fixed sleep); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
