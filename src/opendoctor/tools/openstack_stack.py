"""The demo's and the benchmark's stack on a real OpenStack: the test bed's Keystone,
Placement and Nova, a lab whose hosts stand for Nova's compute hosts, the service with
`vim.driver = "openstack"`, and one consumer per tenant.

A lab host's power-off takes its nova-compute with it (the lab is tied to the bed), and
Nova reports each compute host at the lab host's address, which is where opendoctor's
monitor probes it. The servers are Nova's: each tenant boots its own, so Nova's
`tenant_id` is whom opendoctor tells.

A running bed (`opendoctor openstack-lab up`) is used and left running; otherwise one is
brought up for the run and taken down after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.openstack import bed, catalog
from opendoctor.lab.openstack.catalog import CatalogError
from opendoctor.lab.openstack.spec import ADMIN, BedSpec, Secrets
from opendoctor.lab.openstack.state import start_compute
from opendoctor.lab.openstack.tenants import Nova, Tenant, close_tenant, open_tenant
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, StackError, running_stack, wait_for

Progress = Callable[[str], None]
BOOT_CONCURRENCY = 4  # boots at once: the bed's conductor and scheduler share two cores


@dataclass
class Cloud:
    """The bed as a run uses it: its admin, the run's tenants and their servers."""

    spec: BedSpec
    state: dict[str, Any]
    admin: catalog.Session
    tenants: dict[str, Tenant] = field(default_factory=dict)  # by project id
    servers: dict[str, str] = field(default_factory=dict)  # server id -> project id

    @property
    def nova(self) -> Nova:
        return Nova(self.admin, self.state["urls"])

    @property
    def hosts(self) -> list[str]:
        return list(self.state["hosts"])

    def lab_spec(self) -> LabSpec:
        """A lab with a host per compute host, at the addresses Nova reports, tied to
        the bed's power; no lab VMs (the servers are Nova's)."""
        return LabSpec(
            hosts=len(self.hosts),
            vms=0,
            projects=list(self.tenants),
            ip_prefix=self.state.get("lab_prefix", self.spec.lab_prefix),
            heartbeat=False,
            openstack_dir=str(self.spec.directory),
        )

    def service_env(self) -> dict[str, str]:
        """`vim.driver = "openstack"` on the bed's cloud, following Nova's notifications
        on the bed's RabbitMQ vhost, and callers known by their Keystone tokens, with the
        bed's admin as the service user (URLs and passwords in the environment, never on
        a command line)."""
        notifications = f"amqp://{self.spec.rabbit}/{quote(self.spec.vhost, safe='')}"
        return {
            "OPENDOCTOR_API__AUTH_MODE": "keystone",
            "OPENDOCTOR_API__KEYSTONE__AUTH_URL": self.state["urls"]["keystone"],
            "OPENDOCTOR_API__KEYSTONE__USERNAME": ADMIN,
            "OPENDOCTOR_API__KEYSTONE__PASSWORD": Secrets.load(self.spec.directory).admin,
            "OPENDOCTOR_API__KEYSTONE__PROJECT": ADMIN,
            # A run's service lives a minute on a shared bed: it leaves the catalog alone.
            "OPENDOCTOR_API__KEYSTONE__REGISTER_IN_CATALOG": "false",
            "OS_CLIENT_CONFIG_FILE": str(self.spec.directory / "clouds.yaml"),
            "OPENDOCTOR_VIM__DRIVER": "openstack",
            "OPENDOCTOR_VIM__OPENSTACK__CLOUD": bed.CLOUD,
            "OPENDOCTOR_VIM__OPENSTACK__NOTIFICATIONS_URL": notifications,
            "OPENDOCTOR_VIM__OPENSTACK__POLL_INTERVAL": "2",
        }

    async def compute_states(self) -> dict[str, dict[str, Any]]:
        found = await catalog.compute_services(self.admin, self.state["urls"]["nova"])
        return {s["host"]: s for s in found}

    async def set_enabled(self, host: str, enabled: bool) -> None:
        service = (await self.compute_states())[host]
        body = {"status": "enabled" if enabled else "disabled"}
        await self.nova.call("PUT", f"/os-services/{service['id']}", body)

    def _forced_up(self, service: str) -> Callable[[], Awaitable[bool]]:
        async def attempt() -> bool:
            # Refused (400) while evacuations from the host wait for its nova-compute
            # to restart and close them.
            with contextlib.suppress(CatalogError):
                await self.nova.call("PUT", f"/os-services/{service}", {"forced_down": False})
                return True
            return False

        return attempt

    async def computes_up(self, timeout: float = 180) -> None:
        """Every compute host up, enabled and not forced down in Nova: what the next
        failure's evacuation needs of the hosts it may pick."""
        unready: dict[str, str] = {}

        async def ready() -> bool:
            unready.clear()
            for host, s in (await self.compute_states()).items():
                if s["state"] != "up" or s["status"] != "enabled" or s["forced_down"]:
                    forced = " forced down" if s["forced_down"] else ""
                    unready[host] = f"{s['state']} {s['status']}{forced}"
            return not unready

        try:
            await wait_for("every compute host up in Nova", ready, timeout, interval=0.5)
        except StackError as exc:
            raise StackError(f"{exc}: {unready}") from exc

    async def boot(self, count: int, on: str | None = None) -> None:
        """`count` servers, dealt to the tenants in turn, ACTIVE in Nova; all on host
        `on` if given (the other hosts are disabled in Nova while they boot)."""
        others = [h for h in self.hosts if h != on] if on else []
        for host in others:
            await self.set_enabled(host, False)
        try:
            owners = list(self.tenants.values())
            limit = asyncio.Semaphore(BOOT_CONCURRENCY)

            async def one(i: int) -> None:
                tenant = owners[i % len(owners)]
                nova = Nova(tenant.session, self.state["urls"])
                async with limit:
                    server = await nova.boot(f"vm{i + 1}")
                    self.servers[server] = tenant.project_id
                    await nova.wait(server, "ACTIVE")

            await asyncio.gather(*(one(i) for i in range(len(self.servers), count)))
        finally:
            for host in others:
                await self.set_enabled(host, True)

    async def clean(self) -> None:
        """The run's servers and tenants gone; every compute host running, enabled and
        not forced down, whatever the run left (a host it failed and did not restore)."""
        for host in self.hosts:
            await asyncio.to_thread(start_compute, self.spec, host)
        states = await self.compute_states()
        for host, service in states.items():
            if service["status"] != "enabled":
                await self.set_enabled(host, True)
            if service["forced_down"]:
                await wait_for(f"Nova to let {host} up", self._forced_up(service["id"]), 120, 1)
        limit = asyncio.Semaphore(BOOT_CONCURRENCY)

        async def delete(server: str) -> None:
            async with limit:
                await self.nova.delete(server)

        await asyncio.gather(*(delete(s) for s in list(self.servers)))
        self.servers.clear()
        for tenant in self.tenants.values():
            await close_tenant(self.admin, tenant)
        self.tenants.clear()


@contextlib.asynccontextmanager
async def bed_running(progress: Progress) -> AsyncIterator[tuple[BedSpec, dict[str, Any]]]:
    """The running bed, or one brought up now and taken down afterwards."""
    spec = BedSpec()
    state = bed.running(spec)
    if state is not None:
        yield spec, state
        return
    progress("bringing the OpenStack test bed up (a minute or two)")
    try:
        state = await bed.up(spec, lambda step: progress(f"OpenStack test bed: {step}"))
        yield spec, state
    finally:
        await bed.down(spec)


@contextlib.asynccontextmanager
async def openstack_stack(
    workdir: Path,
    projects: list[str],
    servers: int,
    progress: Progress,
    *,
    on: str | None = None,
    service_env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Stack, Cloud]]:
    """A tenant per name in `projects` with `servers` servers among them (all on host
    `on` if given), and the stack that watches them; all of it gone afterwards."""
    async with bed_running(progress) as (spec, state):
        http = HttpClient(timeout=60)
        admin = await catalog.Session.login(
            http, state["urls"]["keystone"], Secrets.load(spec.directory).admin
        )
        cloud = Cloud(spec, state, admin)
        try:
            await cloud.computes_up()
            for name in projects:
                tenant = await open_tenant(admin, name)
                cloud.tenants[tenant.project_id] = tenant
            progress(f"booting {servers} servers in Nova")
            await cloud.boot(servers, on)
            progress("starting the lab, the service and the consumers")
            env = cloud.service_env() | (service_env or {})
            async with running_stack(cloud.lab_spec(), workdir, env) as s:
                # The API knows callers by their Keystone tokens: the admin's, and each
                # tenant user's for what an owner does (its alarms).
                s.admin = cloud.admin.headers
                s.owners = lambda project: cloud.tenants[project].session.headers
                await _knows(s, cloud)
                yield s, cloud
        finally:
            try:
                await cloud.clean()
            finally:
                await http.close()


async def _knows(s: Stack, cloud: Cloud) -> None:
    """Wait until the service's graph has every server of the run where Nova has it."""
    started = time.monotonic()

    async def known() -> bool:
        servers = {v["id"]: v for v in await s.get("/v1/servers")}
        return all(sid in servers and servers[sid]["host"] for sid in cloud.servers)

    try:
        await wait_for(f"the service to learn about {len(cloud.servers)} servers", known, 60)
    except StackError as exc:
        took = time.monotonic() - started
        raise StackError(f"{exc} ({took:.0f}s; see {s.workdir / 'service.log'})") from exc


def names(cloud: Cloud) -> dict[str, str]:
    """Project id → tenant name, for tables people read."""
    return {pid: t.name for pid, t in cloud.tenants.items()}
