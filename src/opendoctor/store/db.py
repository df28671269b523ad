"""Engine creation and schema migration. The database URL alone picks the engine."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, cast

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, String, any_, bindparam, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).with_name("migrations")

# PostgreSQL is a server that can restart under us. A ping finds the connections a
# restart killed before a request uses them, so the service recovers by itself (see
# `_ping_if_idle`); the connect timeout turns a server that does not answer into a
# prompt error (asyncpg waits a minute by default); the pool is sized for a fault's
# burst of writes (events, faults, outbox, alarm history at once) and a request waits
# at most pool_timeout. Every connection opened is kept: with 10 kept and 10 more
# opened for bursts, a storm opened and closed 37 connections in 3 s (each a server
# process started, a TLS attempt, the codecs set up, every statement prepared again),
# while waiting a few milliseconds for a kept one costs nothing.
_POSTGRES_ENGINE: dict[str, Any] = {
    "pool_size": 20,
    "max_overflow": 0,
    "pool_timeout": 10.0,
    "connect_args": {"timeout": 5.0},
}


# PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name.
_APPLICATION_NAME_MAX = 63


def application_name(url: str) -> str:
    """What this process's connections are called in `pg_stat_activity`: the URL's
    `application_name` (libpq's parameter; `opendoctor` without one) and the process id,
    so an operator sees which process of a scaled-out deployment waits or holds a lock."""
    base = make_url(url).query.get("application_name") or "opendoctor"
    name = f"{base if isinstance(base, str) else base[0]} pid {os.getpid()}"
    return name.encode()[:_APPLICATION_NAME_MAX].decode(errors="ignore")


class DatabaseUnavailable(Exception):
    """The database did not answer (refused, timed out, restarting): retry later."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is out of reach rather than the statement wrong."""
    if isinstance(exc, DatabaseUnavailable | PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    # A connection the server dropped mid-statement (a restart): the pool discards it.
    if exc.connection_invalidated:
        return True
    # SQLite under a burst of writers: busy longer than its busy_timeout. Nothing was
    # written; the writer may try again.
    return "database is locked" in str(exc.orig)


def refused_text(exc: BaseException) -> bool:
    """Whether the database refused a text value as such: PostgreSQL cannot store the NUL
    character (SQLite and JSON can), and from a Python str nothing else gets this error."""
    # SQLSTATE 22021: character_not_in_repertoire.
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "22021"


def sync_url(url: str) -> str:
    """The synchronous driver URL that Alembic uses for the same database."""
    parsed = make_url(url)
    driver = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}.get(
        parsed.drivername, parsed.drivername
    )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (blocking: call it off the event loop)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


def _json_dumps(value: Any) -> str:
    # orjson: several times faster than the standard library on outbox bodies.
    return orjson.dumps(value).decode()


# A connection given back less than this long ago is not pinged when taken again: it
# answered a moment ago. Pinging every checkout (the pool's `pre_ping`) was a round trip
# more per statement; in a storm, a tenth of the scaled-out service's CPU.
PING_AFTER_IDLE = 1.0


def _given_back(_dbapi_conn: object, record: ConnectionPoolEntry) -> None:
    record.info["given_back"] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Callable[[Any, ConnectionPoolEntry, Any], None]:
    def checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("given_back")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool drops this connection and takes (or opens) another.
            raise DisconnectionError(f"{type(exc).__name__}: {exc}") from exc

    return checkout


def _sqlite_pragmas(dbapi_conn: object, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    # WAL lets the API read while the pipeline writes; NORMAL sync is durable across
    # process crashes (not power loss), which is the failure this service must survive.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _connect(
    dialect: Dialect, _record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
) -> Any:
    # Drivers fail to connect with their own errors (asyncpg: a bare OSError or
    # TimeoutError, which SQLAlchemy passes through unwrapped): one type for all of them
    # lets the API answer 503 instead of 500.
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


class Database:
    """An async engine plus a session factory, created from one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            # asyncpg takes the name as a server setting, not as a URL parameter.
            settings = {"application_name": application_name(url)}
            options = _POSTGRES_ENGINE | {
                "connect_args": _POSTGRES_ENGINE["connect_args"] | {"server_settings": settings}
            }
            parsed = parsed.difference_update_query(["application_name"])
        self.engine: AsyncEngine = create_async_engine(
            parsed, json_serializer=_json_dumps, json_deserializer=orjson.loads, **options
        )
        event.listen(self.engine.sync_engine, "do_connect", _connect)
        if parsed.get_backend_name() == "postgresql":
            pool = self.engine.sync_engine.pool
            event.listen(pool, "checkin", _given_back)
            event.listen(pool, "checkout", _ping_if_idle(self.engine.dialect))
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # For a read of one statement, asked often (per batch of events): no transaction
        # around it, so no BEGIN and ROLLBACK, two round trips of its three.
        self.reads: AsyncEngine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def sqlite_file(self) -> str | None:
        """The file of a SQLite database (None: another engine, or SQLite in memory, which
        lives in its connection: only the engine sees it)."""
        path = make_url(str(self.engine.url)).database
        if self.engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return None
        return path

    async def migrate(self) -> None:
        await asyncio.to_thread(migrate, self.url)

    async def close(self) -> None:
        await self.engine.dispose()


async def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database `url` names unless it exists; True if created.
    (SQLite creates its file by itself.)"""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return False
    admin_url = parsed.set(database="postgres").difference_update_query(["application_name"])
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            query = text("SELECT 1 FROM pg_database WHERE datname = :name")
            if await conn.scalar(query, {"name": parsed.database}):
                return False
            name = parsed.database.replace('"', '""')
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        await admin.dispose()


def dialect_insert(db: Database, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on both SQLite and PostgreSQL."""
    return dialect_insert_for(db.engine.dialect.name, table)


def dialect_insert_for(dialect: str, table: Any) -> Any:
    """`dialect_insert` by the dialect's name (`postgresql`, or else SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def one_of(db: Database, column: Any, values: Collection[str]) -> ColumnElement[bool]:
    """`column IN values`, as one statement text whatever the count on PostgreSQL
    (`= ANY($1)`, an array): an IN list's text changes with its length, and asyncpg
    prepares each new text again (a round trip and a statement kept per connection)."""
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        array = bindparam(None, list(values), type_=ARRAY(String))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(values))
