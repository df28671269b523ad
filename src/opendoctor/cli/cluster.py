"""`opendoctor cluster up | status | down`: a scaled-out deployment on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from opendoctor.core.settings import default_state_dir
from opendoctor.lab.clibase import fail

app = typer.Typer(
    help="A scaled-out deployment on this machine, to try it out: every role (api, "
    "inspector, notifier, monitor) as its own processes, N replicas each, on the running "
    "RabbitMQ and PostgreSQL and the running lab. For several machines, see "
    "docs/deployment.md.",
    short_help="Start, inspect and stop a local scaled-out deployment.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

DIR = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        envvar="OPENDOCTOR_CLUSTER_DIR",
        help="Directory of cluster.json and the members' logs "
        "(default: <state dir>/cluster, e.g. ~/.local/state/opendoctor/cluster).",
        show_default=False,
    ),
]


LAB_HOSTS, OPERATOR = "lab-hosts", "operator"


def _monitor_tokens(where: Path) -> Path:
    """The members' monitor tokens file (made once, only its owner reads it): one token
    for the lab's hosts, one for the operator's own monitors and scripts."""
    path = where / "monitor-tokens"
    if not path.exists():
        where.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{name} {secrets.token_urlsafe(24)}\n" for name in (LAB_HOSTS, OPERATOR))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# name token: monitors send the token as X-Auth-Token\n" + lines)
    return path


def _dir(directory: Path | None) -> Path:
    return directory if directory is not None else default_state_dir() / "cluster"


@app.command()
def up(
    replicas: Annotated[int, typer.Option(min=1, max=16, help="processes per role")] = 2,
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL, shared by every member (created if missing)")
    ] = "postgresql+asyncpg://postgres@127.0.0.1:5432/opendoctor",
    amqp_url: Annotated[str, typer.Option(help="the RabbitMQ broker")] = (
        "amqp://guest:guest@127.0.0.1:5672/"
    ),
    prefix: Annotated[str, typer.Option(help="names of the bus's exchanges and queues")] = (
        "opendoctor"
    ),
    partitions: Annotated[int, typer.Option(min=1, max=1024, help="bus partitions")] = 8,
    lab_url: Annotated[
        str | None, typer.Option(help="lab API URL; default: the running lab's")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="an OPENDOCTOR_* setting for every member, e.g. "
            "--set OPENDOCTOR_RECOVERY__ENABLED=false (repeatable)",
        ),
    ] = None,
    directory: DIR = None,
) -> None:
    """Start the members in the background and wait until each serves.

    Prints each member's URL: send events and alarms to an api member. They run until
    `opendoctor cluster down`; their logs are in the cluster directory.
    """
    from opendoctor.api.auth import read_tokens_file
    from opendoctor.app.cluster import Cluster, ClusterSpec, read_state
    from opendoctor.infra.procs import ChildFailed, pid_alive
    from opendoctor.lab.client import LabClient, LabNotRunning
    from opendoctor.store.db import ensure_database

    where = _dir(directory)
    running = read_state(where)
    if running is not None and any(pid_alive(m["pid"]) for m in running["members"]):
        fail(f"a cluster is already running from {where} (stop it with `opendoctor cluster down`)")
    if lab_url is None:
        try:
            lab_url = LabClient.from_state_dir(default_state_dir() / "lab").url
        except LabNotRunning as exc:
            fail(f"{exc}; start one with `opendoctor lab up` or give --lab-url")
    env: dict[str, str] = {}
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("OPENDOCTOR_"):
            fail(f"--set {item!r}: expected OPENDOCTOR_NAME=value")
        env[key] = value
    tokens_file = _monitor_tokens(where)
    env.setdefault("OPENDOCTOR_API__MONITOR_TOKENS_FILE", str(tokens_file))
    try:
        spec = ClusterSpec(
            where, database_url, amqp_url, str(lab_url), replicas, prefix, partitions, env=env
        )
    except ValueError as exc:
        fail(str(exc))

    async def start() -> Cluster:
        if await ensure_database(database_url):
            err.print(f"created database {database_url.rsplit('/', 1)[-1]}")
        cluster = Cluster(spec)
        await cluster.start()
        # The lab's hosts report their VMs' exits and heartbeats to the first API member.
        lab = LabClient(str(lab_url))
        try:
            await lab.set_events_sink(
                cluster.ready + "/events", read_tokens_file(tokens_file)[LAB_HOSTS]
            )
        finally:
            await lab.close()
        return cluster

    with err.status(f"starting {replicas} replica(s) of each of the 4 roles ..."):
        try:
            cluster = asyncio.run(start())
        except ChildFailed as exc:
            fail(f"a member did not start:\n{exc}")
        except OSError as exc:
            fail(f"PostgreSQL not reachable at {database_url}: {exc}")
    table = Table(title=f"cluster up ({where})")
    for column in ("member", "pid", "url"):
        table.add_column(column)
    for member in cluster.members.values():
        table.add_row(member.name, str(member.pid), member.url)
    out.print(table)
    out.print(f"send events and alarms to {cluster.ready} (the lab's hosts report there)")
    out.print(
        f"monitor tokens: {tokens_file} (send `{OPERATOR}`'s as X-Auth-Token with your events)"
    )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    directory: DIR = None,
) -> None:
    """Each member: alive or not, its health, the bus partitions it consumes (and stands by
    for), whether it is the monitor that probes. Exits 1 if a member is not alive."""
    from opendoctor.app.cluster import health

    rows = asyncio.run(health(_dir(directory)))
    if not rows:
        fail(f"no cluster is running from {_dir(directory)}")
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        if not all(r["alive"] for r in rows):
            raise typer.Exit(1)
        return
    table = Table()
    for column in ("member", "pid", "alive", "status", "url", "partitions (standby)", "probes"):
        table.add_column(column)
    for row in rows:
        health_ = row["health"]
        table.add_row(
            row["name"],
            str(row["pid"]),
            "yes" if row["alive"] else "[red]no[/red]",
            str(health_.get("status")),
            row["url"],
            _consuming(health_.get("consuming") or {}),
            "yes" if health_.get("probing") else "",
        )
    out.print(table)
    if not all(r["alive"] for r in rows):
        raise typer.Exit(1)


def _consuming(consuming: dict[str, Any]) -> str:
    def listed(parts: list[int]) -> str:
        return ",".join(map(str, parts)) or "-"

    return "; ".join(
        f"{topic} {listed(p['own'])} ({listed(p['standby'])})" for topic, p in consuming.items()
    )


@app.command()
def down(directory: DIR = None) -> None:
    """Stop every member (SIGTERM; SIGKILL after 10 s)."""
    from opendoctor.app.cluster import stop_detached

    stopped = stop_detached(_dir(directory))
    if not stopped:
        fail(f"no cluster is running from {_dir(directory)}")
    out.print(f"stopped {len(stopped)} members")
