"""What notifier processes deliver per second, alone: `python -m opendoctor.tools.notifier_rate`.

The storm benchmark measures the whole service, where the inspector's handling of
each event (its partition held until the event's servers are set to error) paces
everything after it. This puts the notifier role alone in front of a backlog: a
database of alarms (PostgreSQL), `--replicas` notifier processes (`serve --role
notifier`, splitting the bus partitions as a cluster does), two consumer processes,
and `--faults` messages on the `notifications` topic (RabbitMQ) published at once, each
the batch an inspector hands over for one failed host of `--per-fault` VMs. Printed:
notifications per second from the first publish to the last arrival, and per CPU
second of the notifier processes (what one core delivers, busy).

Each round fires alarms of its own (as a storm does: each alarm fires once, its
transition written and taken up by the other processes' syncs); the first round warms
the connections up and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from opendoctor.core.egress import address_of
from opendoctor.core.model import TRAIT_STRING, NotificationEvent, Trait
from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec
from opendoctor.notifier.remote import NOTIFICATIONS_TOPIC, encode
from opendoctor.notifier.rules import AlarmBody
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.db import Database

PROJECTS = ("project-a", "project-b")
PG = os.environ.get("OPENDOCTOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("OPENDOCTOR_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def _database(admin_url: str) -> AsyncIterator[str]:
    import psycopg

    name = f"od_rate_{uuid.uuid4().hex[:12]}"
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _alarms(db_url: str, instances: list[str], consumers: dict[str, str]) -> None:
    db = Database(db_url)
    await db.migrate()
    store = AlarmStore(db)
    limit = asyncio.Semaphore(16)

    async def one(i: int, instance: str) -> None:
        project = PROJECTS[i % 2]
        body = AlarmBody.model_validate(
            {
                "name": f"vm-failure-{instance}",
                "type": "event",
                "severity": "critical",
                "repeat_actions": False,
                "alarm_actions": [consumers[project] + "/failure"],
                "event_rule": {
                    "event_type": "compute.instance.update",
                    "query": [{"field": "traits.instance_id", "op": "eq", "value": instance}],
                },
            }
        )
        alarm = body.to_alarm(str(uuid.uuid4()), project, "vnfm", "ok", time.time())
        async with limit:
            await store.insert(alarm, [])

    await asyncio.gather(*(one(i, x) for i, x in enumerate(instances)))
    await db.close()


def _faults(instances: list[str], per_fault: int, round_: int) -> list[tuple[str, Any]]:
    out = []
    for f in range(0, len(instances), per_fault):
        host = f"compute{f // per_fault + 1}"
        fault = str(uuid.uuid4())
        events = [
            NotificationEvent(
                "compute.instance.update",
                {
                    "instance_id": Trait("instance_id", TRAIT_STRING, x),
                    "state": Trait("state", TRAIT_STRING, "error"),
                    "host": Trait("host", TRAIT_STRING, host),
                    "project_id": Trait("project_id", TRAIT_STRING, PROJECTS[i % 2]),
                },
                message_id=f"{fault}-{round_}-{i}",
                fault_id=fault,
            )
            for i, x in enumerate(instances[f : f + per_fault], start=f)
        ]
        cause = {"type": "host", "id": host, "status": "down"}
        out.append((host, encode([(events, cause)])))
    return out


async def measure(
    faults: int, per_fault: int, replicas: int, rounds: int, partitions: int = 8
) -> dict[str, Any]:
    from opendoctor.bus.amqp import AmqpBus

    prefix = f"od-rate-{uuid.uuid4().hex[:10]}"
    each = [[str(uuid.uuid4()) for _ in range(faults * per_fault)] for _ in range(rounds + 1)]
    http = HttpClient(timeout=10.0)
    with tempfile.TemporaryDirectory(prefix="od-rate-") as tmp:
        workdir = Path(tmp)
        consumers = {
            p: ChildProcess.python(
                f"consumer-{p}", "opendoctor.tools.consumer", ["--quiet"], workdir
            )
            for p in PROJECTS
        }
        notifiers: list[ChildProcess] = []
        bus = AmqpBus(AMQP, prefix=prefix, partitions=partitions, consume=[])
        try:
            await asyncio.gather(*(c.start() for c in consumers.values()))
            urls = {p: c.ready for p, c in consumers.items()}
            # The service wants a VIM; the notifier role never calls it.
            spec = LabSpec(hosts=1, vms=0, ip_prefix="127.63", heartbeat=False)
            async with _database(PG) as db_url, LabRunner(spec, workdir / "lab") as lab:
                await _alarms(db_url, [x for instances in each for x in instances], urls)
                for r in range(replicas):
                    consume = [p for p in range(partitions) if p % replicas == r]
                    env = {
                        "OPENDOCTOR_ROLES": json.dumps(["notifier"]),
                        "OPENDOCTOR_DATABASE_URL": db_url,
                        "OPENDOCTOR_BUS__KIND": "amqp",
                        "OPENDOCTOR_BUS__URL": AMQP,
                        "OPENDOCTOR_BUS__PREFIX": prefix,
                        "OPENDOCTOR_BUS__PARTITIONS": str(partitions),
                        "OPENDOCTOR_BUS__CONSUME": json.dumps(consume),
                        "OPENDOCTOR_STATE_DIR": str(workdir / f"notifier-{r}"),
                        "OPENDOCTOR_VIM__LAB_URL": lab.url,
                        "OPENDOCTOR_API__PORT": "0",
                        "OPENDOCTOR_LOG_LEVEL": "WARNING",
                        "OPENDOCTOR_NOTIFIER__EGRESS_ALLOW": json.dumps(
                            [address_of(u) for u in urls.values()]
                        ),
                    }
                    notifier = ChildProcess.python(
                        f"notifier-{r}", "opendoctor", ["serve"], workdir, env
                    )
                    notifiers.append(notifier)
                await asyncio.gather(*(n.start() for n in notifiers))
                pids = [n.proc.pid for n in notifiers if n.proc is not None]
                figures = []
                for round_, instances in enumerate(each):
                    for url in urls.values():
                        await http.delete(url + "/received")
                    messages = _faults(instances, per_fault, round_)
                    cpu = sum(_cpu_seconds(p) for p in pids)
                    first = time.time()
                    await asyncio.gather(
                        *(bus.publish(NOTIFICATIONS_TOPIC, m, key=k) for k, m in messages)
                    )
                    arrived = await _arrivals(http, list(urls.values()), len(instances))
                    cpu = sum(_cpu_seconds(p) for p in pids) - cpu
                    took = max(arrived) - first
                    if round_ > 0:  # the first warms the connections up
                        figures.append(
                            {
                                "notifications": len(arrived),
                                "seconds": took,
                                "per_s": len(arrived) / took,
                                "cpu_seconds": cpu,
                                "per_cpu_s": len(arrived) / cpu if cpu else None,
                            }
                        )
        finally:
            await bus.close()
            await asyncio.gather(*(n.stop() for n in notifiers))
            await asyncio.gather(*(c.stop() for c in consumers.values()))
            await http.close()
            await _forget(prefix, partitions)
    return {
        "faults": faults,
        "per_fault": per_fault,
        "replicas": replicas,
        "partitions": partitions,
        "rounds": figures,
    }


async def _arrivals(http: HttpClient, consumers: list[str], want: int) -> list[float]:
    deadline = time.monotonic() + 60 + want / 100
    while True:
        got = [
            r["arrived"] for url in consumers for r in (await http.get(url + "/received")).json()
        ]
        if len(got) >= want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def _forget(prefix: str, partitions: int) -> None:
    from opendoctor.infra.amqp import Broker

    broker = Broker(AMQP, name="opendoctor-notifier-rate")
    try:
        for i in range(partitions):
            await broker.delete_queue(f"{prefix}.{NOTIFICATIONS_TOPIC}.{i}")
        await broker.delete_queue(f"{prefix}.{NOTIFICATIONS_TOPIC}.dead")
        await broker.delete_exchange(f"{prefix}.{NOTIFICATIONS_TOPIC}")
    finally:
        await broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m opendoctor.tools.notifier_rate")
    parser.add_argument("--faults", type=int, default=20, help="messages (failed hosts)")
    parser.add_argument("--per-fault", type=int, default=50, help="VMs per failed host")
    parser.add_argument("--replicas", type=int, default=1, help="notifier processes")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    parser.add_argument("--partitions", type=int, default=8, help="bus partitions")
    args = parser.parse_args()
    result = asyncio.run(
        measure(args.faults, args.per_fault, args.replicas, args.rounds, args.partitions)
    )
    for r in result["rounds"]:
        print(
            f"{args.replicas} notifier(s), {args.partitions} partitions: "
            f"{r['notifications']} in {r['seconds'] * 1000:.0f} ms"
            f" = {r['per_s']:.0f}/s; {r['cpu_seconds']:.2f} CPU s"
            f" = {r['per_cpu_s'] or 0:.0f} per CPU second"
        )


if __name__ == "__main__":
    main()
