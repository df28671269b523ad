"""PostgreSQL for the tests: an empty database per test on the machine's server.

The server is the one `.ci/run` starts (OPENDOCTOR_TEST_PG overrides where it is). A
test that needs it and cannot reach it is skipped on a developer's machine, but fails
in CI (the rule of `tests/servers.py`): a missing server must not turn into a green run
that tested nothing.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from opendoctor.api.errors import DATABASE_DOWN
from tests.servers import need

ADMIN_URL = os.environ.get("OPENDOCTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Why the server could not be reached, once known: every later test says the same at once.
_unreachable: str | None = None


def missing(reason: str) -> None:
    """Skip the test, or fail it in CI, because PostgreSQL is not there."""
    need(f"PostgreSQL is needed and not reachable at {ADMIN_URL}: {reason}")


async def _admin() -> asyncpg.Connection:
    global _unreachable
    if _unreachable is not None:
        missing(_unreachable)
    try:
        return await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unreachable = f"{type(exc).__name__}: {exc}"
        missing(_unreachable)
        raise  # not reached: missing() skips or fails


async def create_database() -> str:
    """A new empty database; returns its name."""
    name = f"od_{uuid.uuid4().hex[:16]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(name: str) -> None:
    admin = await _admin()
    try:
        # FORCE: a connection the test left open must not keep the database alive.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def url_for(name: str, port: int | None = None) -> str:
    """The service's URL of database `name` (through another port: a proxy in between)."""
    url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    if port is not None:
        url = url.set(port=port)
    return url.render_as_string(hide_password=False)


class Databases:
    """The databases of one test session, emptied and handed out again.

    Creating a database costs ~0.15 s (PostgreSQL copies and syncs a template), emptying
    one a few milliseconds: over a few hundred tests that is most of what running them
    on PostgreSQL would add. A test gets a database at the newest schema with every
    table empty, as a new one migrated by the service would be. A test that changes the
    schema itself (migrations) takes a database of its own from `create_database`.
    """

    def __init__(self) -> None:
        self.free: list[str] = []
        self.made: list[str] = []

    async def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = await create_database()
        self.made.append(name)
        return name

    async def give_back(self, name: str) -> None:
        try:
            await _empty(name)
        except (OSError, asyncpg.PostgresError):
            # Not emptied, so not reused: a later test must not see this one's rows.
            self.made.remove(name)
            await drop_database(name)
            return
        self.free.append(name)

    def drop_all(self) -> None:
        async def drop() -> None:
            for name in self.made:
                await drop_database(name)

        if self.made:
            asyncio.run(drop())
        self.made.clear()
        self.free.clear()


async def _empty(name: str) -> None:
    admin = await _admin()
    try:
        # Connections a test left open (a failed test's engine) would hold locks.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(make_url(ADMIN_URL).set(database=name).render_as_string(False))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        async with conn.transaction():
            # DELETE, not TRUNCATE: on tables this small it skips making new files.
            for row in tables:
                await conn.execute(f'DELETE FROM "{row["tablename"]}"')
    finally:
        await conn.close()


def assert_database_down(resp: httpx.Response) -> None:
    """The answer of a service whose database does not answer: a 503 that says so."""
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    body = resp.json()
    assert body.pop("error") == {
        "status": 503,
        "message": DATABASE_DOWN,
        "errors": [{"field": "", "problem": DATABASE_DOWN}],
    }
    # The Aodh API says it as Aodh's clients read it too.
    aodh = {"faultstring": DATABASE_DOWN, "faultcode": "Server", "debuginfo": None}
    assert body == ({"error_message": aodh} if resp.url.path.startswith("/v2/") else {})
