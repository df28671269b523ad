"""opendoctor dies after telling the owners and before recording that it did.

The notifier sends first and writes the outbox after. If the process dies in between,
the fault's event is stored but not marked processed: after the restart it is handled
again, and the owners get the same callbacks again, with the same
`x-openstack-request-id` (so that they can tell a repeat), and nobody else gets any.

The crash is made to happen right there, with nothing in the product for the test: the
owners' endpoint (`holding.py`) holds its answers; once the event is accepted (202) and
every owner's first callback has arrived, the test takes a write lock on the service's
database, lets the answers go, waits until the service has read them all, and SIGKILLs
it. No outbox row can be written meanwhile. The lock is let go, the service started
again. On SQLite (the embedded default) and PostgreSQL (the shared server: nothing is
stopped here).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest

from opendoctor.core.egress import address_of
from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import ADMIN, Stack, running_stack
from tests import pg
from tests.conftest import eventually
from tests.e2e.faults.holding import HoldingConsumer
from tests.integration.pipeline.conftest import host_down

SPEC = LabSpec(
    hosts=3,
    vms=6,
    projects=["project-a", "project-b"],
    ip_prefix="127.88",
    vm_mode="inline",
    heartbeat=False,
)
FAILED = "compute1"
# Far above how long the answers are held: the first attempts must end with the answers.
NOTIFIER_TIMEOUT = 120.0
# Deadlines (seconds) of the polls below; each is met in a second or two when all is well.
SETTLE = 30.0
DELIVERED = re.compile(
    r'^opendoctor_notification_attempts_total\{result="delivered"\} (\S+)$', re.MULTILINE
)


class Store(Protocol):
    """The service's database, as the test reaches it behind the service's back."""

    url: str

    async def lock(self) -> None:
        """Take a lock that stops every write to the outbox until `unlock()`."""

    async def blocked_on_outbox(self) -> bool:
        """Whether the service's write of the outbox is waiting for that lock (True where
        the engine cannot tell)."""

    async def unlock(self) -> None: ...

    async def outbox_rows(self) -> int: ...

    async def unprocessed_events(self) -> int: ...


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"
        self._holder: sqlite3.Connection | None = None

    def _count(self, query: str) -> int:
        with sqlite3.connect(self.path, timeout=30) as conn:
            return int(conn.execute(query).fetchone()[0])

    async def lock(self) -> None:
        # autocommit mode, so that BEGIN is ours; the service may be writing: wait for it.
        holder = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        self._holder = holder

    async def blocked_on_outbox(self) -> bool:
        return True  # SQLite shows no waiting writers; the lock stops them all the same

    async def unlock(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None

    async def outbox_rows(self) -> int:
        return await asyncio.to_thread(self._count, "SELECT count(*) FROM outbox")

    async def unprocessed_events(self) -> int:
        query = "SELECT count(*) FROM events WHERE NOT processed"
        return await asyncio.to_thread(self._count, query)


class PostgresStore:
    def __init__(self, database: str) -> None:
        self.database = database
        self.url = pg.url_for(database)
        self.raw_url = self.url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._holder: asyncpg.Connection | None = None

    async def _value(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.raw_url, timeout=10)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def lock(self) -> None:
        holder = await asyncpg.connect(self.raw_url, timeout=10)
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        self._holder = holder

    async def blocked_on_outbox(self) -> bool:
        waiting = await self._value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO outbox%'",
            self.database,
        )
        return bool(waiting)

    async def unlock(self) -> None:
        if self._holder is not None:
            await self._holder.execute("ROLLBACK")
            await self._holder.close()
            self._holder = None

    async def outbox_rows(self) -> int:
        return int(await self._value("SELECT count(*) FROM outbox"))

    async def unprocessed_events(self) -> int:
        return int(await self._value("SELECT count(*) FROM events WHERE NOT processed"))


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: pg.Databases
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "opendoctor.db")
        try:
            yield sqlite
        finally:
            await sqlite.unlock()
        return
    name = await pg_databases.take()
    postgres = PostgresStore(name)
    try:
        yield postgres
    finally:
        await postgres.unlock()
        await pg_databases.give_back(name)


@pytest.fixture
async def owners() -> AsyncIterator[HoldingConsumer]:
    consumer = HoldingConsumer()
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.close()


def service_env(database_url: str) -> dict[str, str]:
    return {
        "OPENDOCTOR_DATABASE_URL": database_url,
        "OPENDOCTOR_NOTIFIER__TIMEOUT": str(NOTIFIER_TIMEOUT),
        # The test reports the fault, as a monitor would; a heartbeat monitor could also
        # report a host that is only slow on this busy machine, or (after a restart) the
        # failed host as up, since its lab process is alive. Nothing is evacuated: only
        # the notifications are under test.
        "OPENDOCTOR_MONITOR__ENABLED": "false",
        "OPENDOCTOR_RECOVERY__ENABLED": "false",
    }


async def delivered_attempts(s: Stack) -> float:
    """How many delivery attempts the running service process saw succeed."""
    text = (await s.http.get(s.api + "/metrics")).body.decode()
    found = DELIVERED.search(text)
    return float(found.group(1)) if found else 0.0


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as dotted paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(a.keys() | b.keys())
            for d in differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]


async def admin_get(s: Stack, path: str) -> Any:
    async with httpx.AsyncClient(base_url=s.api, headers=s.monitor, timeout=30) as client:
        resp = await client.get(path, headers=ADMIN)
        assert resp.status_code == 200, resp.text
        return resp.json()


async def test_a_crash_between_the_first_attempt_and_the_outbox_write_repeats_the_callbacks(
    tmp_path: Path, store: Store, owners: HoldingConsumer
) -> None:
    """Kill opendoctor after its owners got their callbacks and before it recorded them:
    after the restart each of them gets the same callback once more, same request id,
    same body; then everything is recorded and a further restart sends nothing."""
    allow = [address_of(owners.url)]  # the owners' endpoint is this test's own
    async with running_stack(SPEC, tmp_path, service_env(store.url), egress_allow=allow) as s:
        servers = await s.get("/v1/servers")
        hurt = [v for v in servers if v["host"] == FAILED]
        told = sorted((v["project_id"], v["id"]) for v in hurt)
        assert {p for p, _ in told} == set(SPEC.projects), servers  # both owners hurt
        alarms = await s.register_alarms(lambda v: f"{owners.url}/{v['project_id']}")
        alarm_of = {a["event_rule"]["query"][0]["value"]: a["alarm_id"] for a in alarms}

        async with httpx.AsyncClient(base_url=s.api, headers=s.monitor, timeout=30) as client:
            accepted = await client.put("/events", json=[host_down(FAILED)])
        assert accepted.status_code == 202, accepted.text
        (event_id,) = accepted.json()["accepted"]
        await eventually(
            lambda: set(told) <= set(owners.counts()), SETTLE, "every owner's first callback"
        )

        await store.lock()
        owners.release()

        async def answered() -> bool:
            return await delivered_attempts(s) == len(told)

        await eventually(answered, SETTLE, "the answers read by the service")
        await eventually(store.blocked_on_outbox, SETTLE, "the outbox write waiting")
        service = s.service
        assert isinstance(service, ChildProcess) and service.proc is not None
        service.kill()
        await store.unlock()
        # Before the crash: one callback to each owner of the failed host's servers.
        assert owners.counts() == dict.fromkeys(told, 1)
        first = {(a.project, a.instance_id): a for a in owners.arrivals}
        # What the crash left: the event stored but not handled, and no outbox row.
        assert await store.outbox_rows() == 0
        assert await store.unprocessed_events() == 1

        await service.start()  # a new process, on a new port: s.api follows it

        async def recorded() -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = await admin_get(s, "/v1/notifications")
            done = len(entries) == len(told) and all(e["status"] == "delivered" for e in entries)
            return entries if done else []

        entries = await eventually(recorded, SETTLE, "every notification recorded, delivered")
        # Recorded as delivered: nothing sends them again, the counts are final.
        assert owners.counts() == dict.fromkeys(told, 2)
        for arrival in owners.arrivals:
            original = first[(arrival.project, arrival.instance_id)]
            assert arrival.request_id == original.request_id, arrival
            changed = differences(original.body, arrival.body)
            assert not changed, f"the repeat of {arrival.request_id} differs at {changed}"
            assert arrival.content_type == "application/json"
        assert {e["alarm_id"] for e in entries} == {alarm_of[server] for _, server in told}
        assert {f"req-{e['id']}" for e in entries} == {a.request_id for a in first.values()}

        states = {a["alarm_id"]: a["state"] for a in await admin_get(s, "/v2/alarms")}
        fired = {alarm_of[server] for _, server in told}
        assert {states[a] for a in fired} == {"alarm"}, states
        assert "alarm" not in {states[a] for a in states.keys() - fired}, states

        faults = await admin_get(s, "/v1/faults")
        (fault,) = [f for f in faults if f["hostname"] == FAILED]
        assert sorted(fault["affected"]) == sorted(server for _, server in told)
        # What the owners were told is the fault on record.
        assert {a.body["reason_data"]["root_cause"]["fault_id"] for a in owners.arrivals} == {
            fault["id"]
        }
        detail = await admin_get(s, f"/v1/faults/{fault['id']}")
        assert {n["id"] for n in detail["notifications"]} == {e["id"] for e in entries}
        events = {e["id"]: e for e in await admin_get(s, "/v1/events")}
        assert events[event_id]["processed"] and events[event_id]["fault_id"] == fault["id"]

        # Nothing left to replay; a further restart sends nobody anything.
        await service.stop()
        assert await store.unprocessed_events() == 0
        await service.start()
        async with httpx.AsyncClient(base_url=s.api, headers=s.monitor, timeout=30) as client:
            again = await client.put("/events", json=[host_down(FAILED)])
        assert again.status_code == 202, again.text
        (sentinel,) = again.json()["accepted"]

        async def handled() -> bool:
            # Handled in order after anything replayed about the same host.
            events = {e["id"]: e for e in await admin_get(s, "/v1/events")}
            return bool(events.get(sentinel, {}).get("processed"))

        await eventually(handled, SETTLE, "a second report of the failed host handled")
        assert owners.counts() == dict.fromkeys(told, 2)
        assert len(await admin_get(s, "/v1/notifications")) == len(told)
