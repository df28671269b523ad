"""A running stack of real processes: the lab, the service, one consumer per project.

The demo, the benchmark and the end-to-end tests all drive the same stack, so what the
tests check is what users run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from opendoctor.app.cluster import Cluster, ClusterSpec
from opendoctor.core.egress import address_of
from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.manager.redfish import BMC_FILE
from opendoctor.lab.manager.redfish import ROOT as REDFISH_ROOT
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec

T = TypeVar("T")

ADMIN = {"X-Project-Id": "admin", "X-User-Id": "demo-operator", "X-Roles": "admin"}


class StackError(RuntimeError):
    pass


def owner(project: str) -> dict[str, str]:
    """Headers of a VNF manager acting for `project` (trusted-headers identity)."""
    return {"X-Project-Id": project, "X-User-Id": "vnfm"}


def alarm_body(server: dict[str, Any], url: str) -> dict[str, Any]:
    """The event alarm a VNF manager registers for one of its VMs (Aodh format)."""
    return {
        "name": f"vm-failure-{server['name']}",
        "type": "event",
        "severity": "critical",
        "repeat_actions": False,
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {
                    "field": "traits.instance_id",
                    "op": "eq",
                    "value": server["id"],
                    "type": "string",
                },
                {"field": "traits.state", "op": "eq", "value": "error", "type": "string"},
            ],
        },
    }


async def wait_for(
    what: str, check: Callable[[], Awaitable[T | None]], timeout: float, interval: float = 0.05
) -> T:
    """Poll `check()` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Stack:
    """A running lab + service + consumers, for the demo, the benchmark and tests."""

    workdir: Path
    lab: LabRunner
    service: ChildProcess | Cluster  # one process, or every role's replicas
    consumers: dict[str, ChildProcess]
    monitor: dict[str, str] = field(default_factory=dict)  # headers of a monitor's reports
    http: HttpClient = field(default_factory=HttpClient)
    # Who the stack's driver is to the API: trusted headers by default; Keystone tokens
    # when the service validates them (`api.auth_mode = "keystone"`).
    admin: dict[str, str] = field(default_factory=lambda: dict(ADMIN))
    owners: Callable[[str], dict[str, str]] = owner

    @property
    def api(self) -> str:
        return self.service.ready

    def monitor_env(self) -> dict[str, str]:
        """The environment of a standalone monitor that reports to this stack."""
        return {"OPENDOCTOR_MONITOR__TOKEN": self.monitor["X-Auth-Token"]}

    def service_pids(self) -> set[int]:
        if isinstance(self.service, Cluster):
            return {m.pid for m in self.service.members.values()}
        return {self.service.proc.pid} if self.service.proc is not None else set()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        resp = await self.http.get(self.api + path, headers=headers or self.admin)
        if not resp.ok:
            raise StackError(f"GET {path}: HTTP {resp.status} {resp.body[:300]!r}")
        return resp.json()

    async def received(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        await self.received_more(out)
        return out

    async def received_more(self, got: dict[str, list[dict[str, Any]]]) -> None:
        """Add to `got` (per project) what each consumer received after the records
        already there: polled while a storm arrives, each record is sent once."""
        for project, consumer in self.consumers.items():
            mine = got.setdefault(project, [])
            resp = await self.http.get(f"{consumer.ready}/received?since={len(mine)}")
            if not resp.ok:
                raise StackError(f"GET /received of {project}: HTTP {resp.status}")
            mine.extend(resp.json())

    async def heard(self) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
        """What each project's consumer received, and the projects whose consumer did not
        answer (it died, say): their owners count as told nothing, instead of the
        question failing for every project."""
        received: dict[str, list[dict[str, Any]]] = {}
        silent: set[str] = set()
        for project, consumer in self.consumers.items():
            try:
                resp = await self.http.get(consumer.ready + "/received", timeout=5.0)
            except HttpError:
                resp = None
            if resp is None or not resp.ok:
                silent.add(project)
            received[project] = resp.json() if resp is not None and resp.ok else []
        return received, silent

    async def register_alarms(
        self,
        action: Callable[[dict[str, Any]], str] | None = None,
        *,
        concurrency: int = 1,
        progress: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """One alarm per server, by its owner; `action` gives the action URL (default:
        the owner's consumer's HTTP callback). `concurrency` requests at once (ten
        thousand alarms one by one take a while); `progress()` is called per alarm."""
        servers = await self.get("/v1/servers?limit=100000")
        limit = asyncio.Semaphore(concurrency)

        async def one(server: dict[str, Any]) -> dict[str, Any]:
            if action is None:
                url = self.consumers[server["project_id"]].ready + "/failure"
            else:
                url = action(server)
            headers = self.owners(server["project_id"])
            async with limit:
                resp = await self.http.post(
                    self.api + "/v2/alarms", json=alarm_body(server, url), headers=headers
                )
            if resp.status != 201:
                raise StackError(f"alarm not created: HTTP {resp.status} {resp.body[:300]!r}")
            if progress is not None:
                progress()
            created: dict[str, Any] = resp.json()
            return created

        if concurrency == 1:
            return [await one(server) for server in servers]
        return list(await asyncio.gather(*(one(server) for server in servers)))

    async def rearm(self, alarms: list[dict[str, Any]]) -> None:
        """Put fired alarms back to `ok`, as their owners, so the next fault fires them."""
        limit = asyncio.Semaphore(32)

        async def one(alarm: dict[str, Any]) -> None:
            url = f"{self.api}/v2/alarms/{alarm['alarm_id']}/state"
            async with limit:
                resp = await self.http.put(url, json="ok", headers=self.owners(alarm["project_id"]))
            if not resp.ok:
                raise StackError(f"could not re-arm alarm {alarm['alarm_id']}: HTTP {resp.status}")

        await asyncio.gather(*(one(a) for a in alarms))


@contextlib.asynccontextmanager
async def running_stack(
    spec: LabSpec,
    workdir: Path,
    service_env: dict[str, str] | None = None,
    consumer_args: Callable[[str], list[str]] | None = None,
    replicas: int | None = None,
    egress_allow: list[str] | None = None,
) -> AsyncIterator[Stack]:
    """Lab, service and one consumer per project; `consumer_args(project)` adds to a
    consumer's command line (e.g. `--amqp URL`).

    Alarm actions may reach the consumers and `egress_allow` (e.g. the broker of AMQP
    actions: `address_of(url)`), and nothing else on this machine: not the lab's API.

    With `replicas`, the service is a cluster of that many processes per role, on the
    database and bus `service_env` names (OPENDOCTOR_DATABASE_URL, OPENDOCTOR_BUS__*)."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with LabRunner(spec, workdir / "lab") as lab:
        consumers = {
            p: ChildProcess.python(
                f"consumer-{p}",
                "opendoctor.tools.consumer",
                ["--quiet", "--lab-url", lab.url, *(consumer_args(p) if consumer_args else [])],
                workdir,
                tied=True,
            )
            for p in spec.projects
        }
        # Fresh monitor credentials: the lab's hosts report with one, whatever drives the
        # stack (the demo, a benchmark, a test) with the other. Handed over in the
        # environment, never on a command line.
        tokens = {"lab-hosts": secrets.token_urlsafe(24), "stack": secrets.token_urlsafe(24)}
        env = {
            "OPENDOCTOR_STATE_DIR": str(workdir / "service"),
            "OPENDOCTOR_VIM__LAB_URL": lab.url,
            "OPENDOCTOR_API__PORT": "0",
            "OPENDOCTOR_API__MONITOR_TOKENS": json.dumps(tokens),
            # The demos and benchmarks fail and repair the same hosts run after run, each
            # run a fault of its own: no flap damping unless the caller asks for it.
            "OPENDOCTOR_INSPECTOR__HOLD_DOWN": "0",
            **(service_env or {}),
        }
        # Each lab host's BMC is its fence device: a failed host is powered off and
        # confirmed off before its servers move (T05). The account goes in the
        # environment, never on a command line.
        env.setdefault("OPENDOCTOR_RECOVERY__FENCING__DEVICES", json.dumps(fence_devices(lab)))
        service: ChildProcess | Cluster | None = None
        try:
            await asyncio.gather(*(c.start() for c in consumers.values()))
            allowed = [address_of(c.ready) for c in consumers.values()] + (egress_allow or [])
            env.setdefault("OPENDOCTOR_NOTIFIER__EGRESS_ALLOW", json.dumps(allowed))
            service = (
                ChildProcess.python("service", "opendoctor", ["serve"], workdir, env, tied=True)
                if replicas is None
                else Cluster(cluster_spec(workdir / "cluster", lab.url, replicas, env))
            )
            await service.start()
            # Host-side monitors (process exits, guest heartbeats) report to the service.
            await lab.client.set_events_sink(service.ready + "/events", tokens["lab-hosts"])
            s = Stack(workdir, lab, service, consumers, {"X-Auth-Token": tokens["stack"]})
            try:
                yield s
            finally:
                await s.http.close()
        finally:
            if service is not None:
                await service.stop()
            await asyncio.gather(*(c.stop() for c in consumers.values()))


def fence_devices(lab: LabRunner) -> dict[str, dict[str, str]]:
    """`recovery.fencing.devices` for every host of a running lab: its Redfish BMC."""
    account = json.loads((lab.state_dir / BMC_FILE).read_text())
    return {
        lab.spec.host_name(i): {
            "address": lab.url + REDFISH_ROOT,
            "system": lab.spec.host_name(i),
            "username": account["username"],
            "password": account["password"],
        }
        for i in range(1, lab.spec.hosts + 1)
    }


def cluster_spec(directory: Path, lab_url: str, replicas: int, env: dict[str, str]) -> ClusterSpec:
    """A cluster on the database and bus that a single service's environment names."""
    env = dict(env)
    take = env.pop
    for per_member in ("OPENDOCTOR_STATE_DIR", "OPENDOCTOR_API__PORT", "OPENDOCTOR_VIM__LAB_URL"):
        env.pop(per_member, None)
    return ClusterSpec(
        directory,
        database_url=take("OPENDOCTOR_DATABASE_URL"),
        amqp_url=take("OPENDOCTOR_BUS__URL"),
        lab_url=lab_url,
        replicas=replicas,
        prefix=take("OPENDOCTOR_BUS__PREFIX", "opendoctor"),
        partitions=int(take("OPENDOCTOR_BUS__PARTITIONS", "8")),
        env={k: v for k, v in env.items() if k != "OPENDOCTOR_BUS__KIND"},
    )
