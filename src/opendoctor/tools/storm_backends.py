"""The backing servers of `opendoctor bench storm`'s scaled modes: a PostgreSQL database
and a RabbitMQ prefix made for one run, and removed after it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from opendoctor.core.egress import address_of
from opendoctor.tools.storm_modes import TOPICS, Mode, Options, Unavailable


@dataclass(slots=True)
class Deployment:
    """What one mode's stack runs on: the service's environment, the owners' actions."""

    env: dict[str, str]
    consumer_args: Callable[[str], list[str]] | None = None
    action: Callable[[dict[str, Any]], str] | None = None
    where: str = "SQLite file, in-process bus"
    database: str | None = None  # PostgreSQL database made for the run (then dropped)
    bus_prefix: str | None = None  # RabbitMQ exchanges and queues made for it (then deleted)
    egress_allow: list[str] | None = None  # where the actions go besides the consumers


def _pg_dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _service_db_url(admin_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


def _safe_pg(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextlib.asynccontextmanager
async def _pg_admin(url: str) -> AsyncIterator[Any]:
    """An autocommit connection to PostgreSQL (CREATE/DROP DATABASE), through psycopg."""
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install 'opendoctor[postgres]')") from exc
    try:
        conn = await psycopg.AsyncConnection.connect(
            _pg_dsn(url), autocommit=True, connect_timeout=5
        )
    except (OSError, psycopg.Error) as exc:
        raise Unavailable(f"PostgreSQL is not reachable at {_safe_pg(url)}: {exc}") from exc
    async with conn:
        yield conn


async def _broker(url: str) -> Any:
    try:
        from opendoctor.infra.amqp import AmqpError, Broker
    except ImportError as exc:
        raise Unavailable("aio-pika is not installed (pip install 'opendoctor[amqp]')") from exc
    broker = Broker(url, name="opendoctor-bench-storm")
    try:
        await broker.connect()
    except (AmqpError, OSError, TimeoutError) as exc:
        await broker.close()
        raise Unavailable(f"RabbitMQ is not reachable at {broker.broker.safe}: {exc}") from exc
    return broker


async def check_backends(opts: Options) -> None:
    """Raise `Unavailable`, naming what and why, unless PostgreSQL and RabbitMQ answer."""
    async with _pg_admin(opts.pg_url):
        pass
    broker = await _broker(opts.amqp_url)
    await broker.close()


@contextlib.asynccontextmanager
async def deploy(mode: Mode, opts: Options) -> AsyncIterator[Deployment]:
    """The mode's backing servers for one run; created here, removed afterwards."""
    if not mode.backends:
        yield Deployment(env={})
        return
    database = f"od_storm_{uuid.uuid4().hex[:12]}"
    prefix = f"od-storm-{uuid.uuid4().hex[:12]}"
    async with _pg_admin(opts.pg_url) as conn:
        await conn.execute(f'CREATE DATABASE "{database}"')
    base = opts.amqp_url.rstrip("/")
    alarms_exchange = f"{prefix}.alarms"

    def topic(project: str) -> str:
        return f"{base}/?exchange={alarms_exchange}&routing_key=alarm.{project}"

    env = {
        "OPENDOCTOR_DATABASE_URL": _service_db_url(opts.pg_url, database),
        "OPENDOCTOR_BUS__KIND": "amqp",
        "OPENDOCTOR_BUS__URL": opts.amqp_url,
        "OPENDOCTOR_BUS__PREFIX": prefix,
        "OPENDOCTOR_BUS__PARTITIONS": str(opts.partitions),
    }
    where = f"PostgreSQL database {database}, RabbitMQ prefix {prefix}"
    try:
        if opts.amqp_actions:
            yield Deployment(
                env,
                consumer_args=lambda p: ["--amqp", topic(p)],
                action=lambda server: topic(server["project_id"]),
                where=where + ", owners on AMQP",
                database=database,
                bus_prefix=prefix,
                egress_allow=[address_of(opts.amqp_url)],
            )
        else:
            yield Deployment(env, where=where, database=database, bus_prefix=prefix)
    finally:
        await _remove_backends(opts, database, prefix, alarms_exchange)


async def _remove_backends(opts: Options, database: str, prefix: str, alarms: str) -> None:
    # Both are tried, whatever happens to the other: neither may be left behind.
    try:
        async with _pg_admin(opts.pg_url) as conn:
            # FORCE: connections the service left open must not keep the database alive.
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        broker = await _broker(opts.amqp_url)
        try:
            for topic in TOPICS:
                queues = [f"{prefix}.{topic}.{i}" for i in range(opts.partitions)]
                for queue in [*queues, f"{prefix}.{topic}.dead"]:
                    await broker.delete_queue(queue)
                await broker.delete_exchange(f"{prefix}.{topic}")
            await broker.delete_exchange(alarms)
        finally:
            await broker.close()
