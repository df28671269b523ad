"""Shared test helpers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from opendoctor.store.db import Database
from tests import pg

T = TypeVar("T")

# The events API takes reports only from monitors with a token. Every service a test
# starts, in process or as a child, knows this one (from the environment, as an
# operator would set it); the tests' HTTP clients send it (`MONITOR`).
MONITOR_TOKEN = "test-monitor-token"
MONITOR = {"X-Auth-Token": MONITOR_TOKEN}
MONITOR_TOKENS_ENV = "OPENDOCTOR_API__MONITOR_TOKENS"
# The tests' consumers listen on loopback, which alarm actions may not reach by default.
EGRESS_ENV = "OPENDOCTOR_NOTIFIER__EGRESS_ALLOW"


def pytest_configure(config: pytest.Config) -> None:
    os.environ[MONITOR_TOKENS_ENV] = json.dumps({"tests": MONITOR_TOKEN})
    os.environ[EGRESS_ENV] = json.dumps(["127.0.0.0/8", "::1"])


ENGINES = ["sqlite", "postgresql"]
# The layout: tests/unit/<package>/ (one block, in process; the store's tests on both
# engines), tests/integration/ (blocks together, real servers and processes),
# tests/e2e/ (the whole service and the lab). Every e2e test is slow, and so is any
# module that starts real processes (see the `slow` marker).
SLOW_FOLDERS = {"e2e"}
PROCESS_STARTERS = {
    "running_stack",
    "LabRunner",
    "ChildProcess",
    "Cluster",
    "private_postgres",
    "private_rabbit",
    "subprocess",
}
# Stories of a minute or more each (storms, kills and restarts of whole clusters, every
# maintenance workflow): marked `long` and run by `make test-long`, so that `make test`
# stays within its budget on two cores. CI runs both.
LONG_MODULES = {
    "tests/e2e/test_bench_storm.py",
    "tests/e2e/test_recovery_methods.py",
    "tests/e2e/test_maintenance_lab.py",
    "tests/e2e/faults/test_rabbitmq_kill.py",
    "tests/integration/amqp/test_backlog.py",
    "tests/integration/amqp/test_cluster_rebalance.py",
    "tests/integration/amqp/test_cluster_faults.py",
    "tests/integration/amqp/test_cluster_cli.py",
}
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what each test uses, so they cannot drift from the tests: the servers
    it needs (`postgresql`, `rabbitmq`), whether it starts real processes (`slow`), and
    whether it is one of the long stories (`long`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if "pg_databases" in fixtures or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgresql)
        if "amqp_url" in fixtures:
            item.add_marker(pytest.mark.rabbitmq)
        module = getattr(item, "module", None)
        starts = module is not None and PROCESS_STARTERS & set(vars(module))
        if starts or SLOW_FOLDERS & set(item.path.parts):
            item.add_marker(pytest.mark.slow)
        if item.path.relative_to(ROOT).as_posix() in LONG_MODULES:
            item.add_marker(pytest.mark.long)


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


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An empty store on each engine (see `db_url`), migrated to the newest schema."""
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()


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
