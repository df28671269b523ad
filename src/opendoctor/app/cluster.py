"""A scaled-out deployment on one machine: every role as its own processes, N replicas
each, on the running RabbitMQ and PostgreSQL (`opendoctor cluster up`).

Each member is `opendoctor serve --role R` with the shared database and bus, started
in its own session (it outlives the command that started it) and listed in
`cluster.json` in the cluster's directory, with its pid, URL and log. The inspector and
notifier replicas split the bus partitions between them (replica i first takes the
partitions p with p % N == i) and stand by for the others, so that when one dies the
broker hands its partitions to a survivor; when it comes back (`Cluster.restart`), the
survivor hands them back (`bus.handback`). The monitor replicas elect one leader
through a lease in the database. Each member's database connections are named after it
(`application_name`, seen in `pg_stat_activity`), its broker connection after its pid.

It is for trying the scaled-out mode and for the tests and the benchmark; a
multi-machine deployment runs the same commands under systemd (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from opendoctor.core.settings import Role
from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.infra.procs import ChildProcess, pid_alive, terminate

STATE_FILE = "cluster.json"
# Started first: whoever consumes the bus is there before the API hands it events.
START_ORDER: tuple[Role, ...] = ("inspector", "notifier", "monitor", "api")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    directory: Path
    database_url: str
    amqp_url: str
    lab_url: str
    replicas: int = 2
    prefix: str = "opendoctor"
    partitions: int = 8
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every member

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 16:
            raise ValueError("replicas: between 1 and 16")
        if self.partitions < self.replicas:
            raise ValueError(f"partitions ({self.partitions}) must be at least replicas")


@dataclass(slots=True)
class Member:
    name: str  # e.g. inspector-0
    role: Role
    replica: int
    pid: int = 0
    url: str = ""
    log: str = ""


def share(partitions: int, replicas: int, replica: int) -> list[int]:
    """The partitions a replica consumes first (it stands by for the rest)."""
    return [p for p in range(partitions) if p % replicas == replica]


def member_database_url(url: str, name: str) -> str:
    """The database URL a member connects with: named after the member (unless the URL
    names its connections already), so that `pg_stat_activity` says which member holds
    or waits for what (`store.db` adds the process id)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or "application_name" in parsed.query:
        return url
    named = parsed.update_query_dict({"application_name": f"opendoctor-{name}"})
    return named.render_as_string(hide_password=False)


def member_env(spec: ClusterSpec, role: Role, replica: int) -> dict[str, str]:
    env = {
        "OPENDOCTOR_ROLES": json.dumps([role]),
        "OPENDOCTOR_DATABASE_URL": member_database_url(spec.database_url, f"{role}-{replica}"),
        "OPENDOCTOR_BUS__KIND": "amqp",
        "OPENDOCTOR_BUS__URL": spec.amqp_url,
        "OPENDOCTOR_BUS__PREFIX": spec.prefix,
        "OPENDOCTOR_BUS__PARTITIONS": str(spec.partitions),
        "OPENDOCTOR_VIM__LAB_URL": spec.lab_url,
        "OPENDOCTOR_STATE_DIR": str(spec.directory / f"{role}-{replica}"),
        "OPENDOCTOR_API__HOST": spec.host,
        "OPENDOCTOR_API__PORT": "0",
        "OPENDOCTOR_MONITOR__LEASE": spec.prefix,
    }
    if role in ("inspector", "notifier") and spec.replicas > 1:
        env["OPENDOCTOR_BUS__CONSUME"] = json.dumps(share(spec.partitions, spec.replicas, replica))
    return env | spec.env


class Cluster:
    """The members of one deployment, started and stopped together."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.processes: dict[str, ChildProcess] = {}
        self.members: dict[str, Member] = {}

    @property
    def ready(self) -> str:
        """The first API replica's URL (what clients and the lab's hosts talk to)."""
        return self.members["api-0"].url

    def urls(self, role: Role) -> list[str]:
        return [m.url for m in self.members.values() if m.role == role]

    async def start(self, timeout: float = 60.0) -> None:
        self.spec.directory.mkdir(parents=True, exist_ok=True)
        try:
            for role in START_ORDER:
                started = [self._start(role, i, timeout) for i in range(self.spec.replicas)]
                await asyncio.gather(*started)
        except BaseException:
            await self.stop()
            raise
        self.save()

    async def _start(self, role: Role, replica: int, timeout: float) -> None:
        name = f"{role}-{replica}"
        env = member_env(self.spec, role, replica)
        proc = ChildProcess.python(name, "opendoctor", ["serve"], self.spec.directory, env)
        self.processes[name] = proc
        url = await proc.start(timeout)
        assert proc.proc is not None
        self.members[name] = Member(name, role, replica, proc.proc.pid, url, str(proc.log_file))

    def save(self) -> None:
        data = {
            "started": time.time(),
            "spec": {
                "replicas": self.spec.replicas,
                "partitions": self.spec.partitions,
                "prefix": self.spec.prefix,
                "lab_url": self.spec.lab_url,
            },
            "members": [asdict(m) for m in self.members.values()],
        }
        path = self.spec.directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    def kill(self, name: str) -> None:
        """SIGKILL one member, as a crash would."""
        self.processes[name].kill()

    async def restart(self, name: str, timeout: float = 60.0) -> Member:
        """Start a member again (after `kill`, say) as the same replica: the same
        partitions, state directory and log (appended to); a new pid and URL."""
        member = self.members[name]
        proc = self.processes[name]
        if proc.proc is not None and proc.proc.poll() is None:
            raise RuntimeError(f"{name} is running (pid {proc.proc.pid})")
        member.url = await proc.start(timeout)
        assert proc.proc is not None
        member.pid = proc.proc.pid
        self.save()
        return member

    async def stop(self) -> None:
        # The API first (no new work), the consumers of the bus last.
        for role in reversed(START_ORDER):
            await asyncio.gather(
                *(p.stop() for n, p in self.processes.items() if n.startswith(role + "-"))
            )
        (self.spec.directory / STATE_FILE).unlink(missing_ok=True)

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --- a cluster started by another command (`cluster up`), from its state file ---------------


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def stop_detached(directory: Path, timeout: float = 10.0) -> list[str]:
    """Stop every member listed in the directory's state file; returns their names."""
    data = read_state(directory)
    if data is None:
        return []
    members = [Member(**m) for m in data["members"]]
    order = {role: i for i, role in enumerate(reversed(START_ORDER))}
    ordered = sorted(members, key=lambda m: order.get(m.role, 0))
    terminate([m.pid for m in ordered], timeout, group=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return [m.name for m in members]


async def health(directory: Path) -> list[dict[str, Any]]:
    """Each member of the state file, with its `/health` (or why it has none)."""
    data = read_state(directory)
    if data is None:
        return []
    http = HttpClient(timeout=2.0)
    try:

        async def one(raw: dict[str, Any]) -> dict[str, Any]:
            member = Member(**raw)
            row: dict[str, Any] = asdict(member) | {"alive": pid_alive(member.pid)}
            try:
                resp = await http.get(member.url + "/health")
                row["health"] = resp.json() if resp.ok else {"status": f"HTTP {resp.status}"}
            except (HttpError, ValueError) as exc:
                row["health"] = {"status": "unreachable", "error": str(exc)}
            return row

        return list(await asyncio.gather(*(one(m) for m in data["members"])))
    finally:
        await http.close()
