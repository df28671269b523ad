"""The pool pings a PostgreSQL connection that sat idle, not one given back a moment ago:
a connection the server killed while idle is replaced without the caller noticing. It
keeps the connections it opens, twenty at most."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from opendoctor.store import db as db_module
from opendoctor.store.db import Database, unavailable
from tests import pg


async def _backend_pid(database: Database) -> int:
    async with database.engine.connect() as conn:
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def _kill(name: str, pid: int) -> None:
    admin = await asyncpg.connect(pg.url_for(name).replace("+asyncpg", ""))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_an_idle_connection_killed_by_the_server_is_replaced(
    pg_databases: pg.Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await pg_databases.take()
    database = Database(pg.url_for(name))
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)  # every connection counts as idle
    try:
        first = await _backend_pid(database)
        await _kill(name, first)
        # Pinged when taken again, found dead, and replaced by a new connection.
        assert await _backend_pid(database) != first
    finally:
        await database.close()
        await pg_databases.give_back(name)


async def test_a_connection_given_back_a_moment_ago_is_not_pinged(
    pg_databases: pg.Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await pg_databases.take()
    database = Database(pg.url_for(name))
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 3600.0)
    try:
        await _kill(name, await _backend_pid(database))
        # No ping: the statement itself meets the dead connection, and the error says
        # the database is out of reach (the API answers 503; the pool drops it).
        with pytest.raises(DBAPIError) as caught:
            await _backend_pid(database)
        assert unavailable(caught.value)
        assert isinstance(await _backend_pid(database), int)
    finally:
        await database.close()
        await pg_databases.give_back(name)


async def test_a_burst_beyond_the_pool_waits_and_the_connections_opened_are_kept(
    pg_databases: pg.Databases,
) -> None:
    """Thirty statements at once run on at most twenty connections (the rest wait for
    one), and a second burst opens none: a storm's bursts no longer start and end
    server processes (a burst once opened and closed 37 connections in 3 s)."""
    name = await pg_databases.take()
    database = Database(pg.url_for(name))
    opened: list[int] = []
    event.listen(database.engine.sync_engine.pool, "connect", lambda *_: opened.append(1))

    async def one() -> int:
        async with database.engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))
        assert isinstance(pid, int)
        return pid

    try:
        first = set(await asyncio.gather(*(one() for _ in range(30))))
        assert len(opened) == len(first) == 20
        second = set(await asyncio.gather(*(one() for _ in range(30))))
        assert len(opened) == 20
        assert second == first
    finally:
        await database.close()
        await pg_databases.give_back(name)
