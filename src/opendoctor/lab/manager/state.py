"""The lab manager's brain: host processes, server records and every operation on them.

The records play the VIM (what Nova would believe); the processes are the truth. The
two differ on purpose after a fault until someone (opendoctor) tells the VIM.

Where a server may go (room, load, placements in flight) is decided in `placement`;
migrations and evacuations are done in `moves`, with the helpers `Lab` lends them
(`lock`, `target`, `run_vm`, `halt_vm`, `emit_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

from opendoctor.lab.manager import apps, moves
from opendoctor.lab.manager.groups import ServerGroups
from opendoctor.lab.manager.hostctl import HostCallError, HostProc, socket_root
from opendoctor.lab.manager.hostevents import HostEvents
from opendoctor.lab.manager.lb import LoadBalancer
from opendoctor.lab.manager.placement import Placement
from opendoctor.lab.manager.records import ChangeLog, HostRecord, LabError, ServerRecord, Size
from opendoctor.lab.openstack import state as openstack_power
from opendoctor.lab.spec import LabSpec, version_problem

log = logging.getLogger("opendoctor.lab.manager")


async def _all(aws: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Run all at once; on the first failure cancel the rest (so nothing starts late)."""
    try:
        async with asyncio.TaskGroup() as group:
            for aw in aws:
                group.create_task(aw)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


class Lab:
    def __init__(self, spec: LabSpec, state_dir: Path | None = None) -> None:
        self.spec = spec
        self.hosts: dict[str, HostRecord] = {}
        # Guest heartbeat sockets: <state dir>/hosts/<host>/<vm>.hb.sock, if that is short.
        self.socket_root = socket_root(state_dir) if spec.heartbeat else None
        for i in range(1, spec.hosts + 1):
            name = spec.host_name(i)
            proc = HostProc(
                name, spec.host_address(i), spec.heartbeat_port, spec.control_port, spec.vm_mode,
                socket_dir=str(self.socket_root / name) if self.socket_root else None,
                alt_address=spec.host_alt_address(i),
            )  # fmt: skip
            proc.events_sink = (spec.events_url, spec.events_token)
            self.hosts[name] = HostRecord(
                name, proc, vcpus=spec.host_vcpus, ram_mb=spec.host_ram_mb,
                version=spec.host_version,
            )  # fmt: skip
        self.servers: dict[str, ServerRecord] = {}
        self.faults: list[dict[str, Any]] = []
        self.changes = ChangeLog()
        self._vm_count = 0
        # Names taken, including those of servers still being created.
        self._names: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        # Placements in flight count as load, so parallel evacuations spread out.
        self.placement = Placement(self.hosts, lambda: self.servers.values())
        self.lb = LoadBalancer(self._locate, spec.vip_address)
        self.events = HostEvents(self.hosts)
        self.groups = ServerGroups()

    # ----- life cycle -------------------------------------------------------------------

    async def boot(self) -> None:
        """Start every host, then the spec's VMs (round-robin), and return when all serve."""
        await _all(h.proc.launch() for h in self.hosts.values())
        names, projects, spec = list(self.hosts), self.spec.projects, self.spec
        # The spec's server group: one of that name per project, its VMs join it.
        group = spec.server_group
        groups = {p: self.groups.create(group, "", p).id for p in projects} if group else {}
        # Round-robin: vm1 on compute1 for project-a, vm2 on compute2 for project-b, ...
        await _all(
            self.create_server(
                f"vm{j + 1}",
                project,
                names[j % len(names)],
                services=spec.services,
                group=groups.get(project),
            )
            for j, project in ((j, projects[j % len(projects)]) for j in range(spec.vms))
        )
        # Creation finished in any order; list the servers in the order of their addresses.
        ordered = sorted(self.servers.values(), key=lambda s: s.number)
        self.servers = {s.id: s for s in ordered}

    async def shutdown(self) -> None:
        await self.lb.close()
        await asyncio.gather(*(h.proc.terminate() for h in self.hosts.values()))
        if self.socket_root is not None:
            shutil.rmtree(self.socket_root, ignore_errors=True)

    # ----- look-ups -----------------------------------------------------------------------

    def host(self, name: str) -> HostRecord:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(404, f"no host named {name!r}") from None

    def server(self, server_id: str) -> ServerRecord:
        try:
            return self.servers[server_id]
        except KeyError:
            raise LabError(404, f"no server with id {server_id!r}") from None

    def _locate(self, server_id: str) -> tuple[str, str, int] | None:
        server = self.servers.get(server_id)
        return None if server is None else (server.name, server.address, server.port)

    def target(
        self, requested: str | None, source: str | None, size: Size | None = None
    ) -> HostRecord:
        """The requested host if it can take a server, else the least loaded usable host."""
        wanted = None if requested is None else self.host(requested)
        return self.placement.target(wanted, source, size)

    def lock(self, server_id: str) -> asyncio.Lock:
        return self._locks.setdefault(server_id, asyncio.Lock())

    async def run_vm(self, host: HostRecord, server: ServerRecord, announce: bool = False) -> None:
        """Start the server's VM on `host` with its application's role and health."""
        try:
            await host.proc.start_vm(
                server.name, server.address, server.port, instance_id=server.id,
                role=server.role, healthy=server.healthy, announce=announce,
                services=server.services,
            )  # fmt: skip
        except HostCallError as exc:
            raise LabError(502, f"starting {server.name} on {host.name} failed: {exc}") from exc

    async def halt_vm(self, host: HostRecord, server: ServerRecord) -> None:
        if not host.alive:
            return  # a dead host runs nothing
        try:
            await host.proc.stop_vm(server.name)
        except HostCallError as exc:
            raise LabError(502, f"stopping {server.name} on {host.name} failed: {exc}") from exc

    def _emit_host(self, host: HostRecord) -> None:
        self.changes.append("host", "upsert", host.to_json())

    def emit_server(self, server: ServerRecord, op: str = "upsert") -> None:
        self.changes.append("server", op, server.to_json())

    # ----- hosts --------------------------------------------------------------------------

    def force_down(self, name: str, down: bool) -> HostRecord:
        host = self.host(name)
        if host.forced_down != down:
            host.forced_down = down
            self._emit_host(host)
        return host

    def set_enabled(self, name: str, enabled: bool) -> HostRecord:
        host = self.host(name)
        if host.enabled != enabled:
            host.enabled = enabled
            self._emit_host(host)
        return host

    def stage_version(self, name: str, version: str) -> HostRecord:
        """What the host runs after its next power-on (an upgrade an operator staged)."""
        problem = version_problem(version)
        if problem is not None:
            raise LabError(400, f"'version' {problem}")
        host = self.host(name)
        host.staged_version = version
        return host

    async def fail_host(self, name: str, kind: str = "power-off") -> dict[str, Any]:
        """Cut the host's power (`kind` says who: a fault injected, or its BMC)."""
        host = self.host(name)
        if not host.alive:
            raise LabError(409, f"host {name} is not running")
        t00 = await host.proc.kill()
        fault = {"host": name, "t00": t00, "kind": kind}
        self.faults.append(fault)
        log.info("power-off of %s at %.6f", name, t00)
        # The tied OpenStack test bed's nova-compute of this host runs on it, as it would
        # in a real cloud: it goes down with it, and Nova sees what a real cloud would.
        bed = openstack_power.tied_bed()
        pid = openstack_power.kill_compute(bed, name) if bed is not None else None
        if pid is not None:
            log.info("killed the OpenStack bed's nova-compute of %s (pid %d)", name, pid)
        return fault

    async def restore_host(self, name: str) -> HostRecord:
        host = self.host(name)
        if host.alive:
            raise LabError(409, f"host {name} is already running")
        try:
            await host.proc.launch()
        except HostCallError as exc:
            raise LabError(502, str(exc)) from exc
        log.info("restored %s", name)
        if host.staged_version is not None:
            # It booted into the staged version: the VIM sees it as a hypervisor reports
            # its new version once its compute service is back.
            host.version, host.staged_version = host.staged_version, None
            log.info("%s now runs version %s", name, host.version)
            self._emit_host(host)
        bed = openstack_power.tied_bed()
        if bed is not None and openstack_power.start_compute(bed, name) is not None:
            log.info("started the OpenStack bed's nova-compute of %s again", name)
        return host

    async def cut_link(self, name: str) -> dict[str, Any]:
        """Cut the link of a host's address: heartbeat probes there go unanswered, while
        the host, its VMs, its events and its alt address carry on."""
        t00 = await self._set_link(name, up=False)
        fault = {"host": name, "t00": t00, "kind": "link-cut"}
        self.faults.append(fault)
        log.info("cut the link of %s at %.6f", name, t00)
        return fault

    async def restore_link(self, name: str) -> HostRecord:
        await self._set_link(name, up=True)
        log.info("restored the link of %s", name)
        return self.host(name)

    async def set_loss(self, name: str, fraction: float, path: str) -> HostRecord:
        """Drop a share of a host's heartbeat answers at random (see HostProc.set_loss)."""
        host = self.host(name)
        if not host.alive:
            raise LabError(409, f"host {name} is not running")
        try:
            loss = await host.proc.set_loss(fraction, path)
        except HostCallError as exc:
            raise LabError(502, f"host {name}: loss not set: {exc}") from exc
        log.info("heartbeat answers of %s lost: %s", name, loss)
        return host

    async def _set_link(self, name: str, up: bool) -> float:
        """The time just before the change."""
        host = self.host(name)
        if not host.alive:
            raise LabError(409, f"host {name} is not running")
        if host.proc.link_cut != up:
            raise LabError(409, f"the link of host {name} is already {'up' if up else 'cut'}")
        try:
            return await host.proc.set_link(up)
        except HostCallError as exc:
            raise LabError(502, f"host {name}: link not changed: {exc}") from exc

    # ----- servers ------------------------------------------------------------------------

    async def create_server(
        self,
        name: str,
        project_id: str,
        host: str | None = None,
        role: str = "active",
        metadata: dict[str, str] | None = None,
        size: Size | None = None,
        *,
        services: list[str] | None = None,
        group: str | None = None,
    ) -> ServerRecord:
        if name in self._names:
            raise LabError(409, f"a server named {name!r} exists")
        apps.check_role(role)
        if group is not None:
            self.groups.check_join(group, project_id)
        size = size or Size()
        target = self.target(host, None, size)
        self._names.add(name)
        self._vm_count += 1
        server = ServerRecord(
            id=str(uuid.uuid4()),
            name=name,
            host=target.name,
            project_id=project_id,
            address=self.spec.vm_address(self._vm_count),
            port=self.spec.vm_port,
            number=self._vm_count,
            role=role,
            metadata=dict(metadata or {}),
            vcpus=size.vcpus,
            ram_mb=size.ram_mb,
            services=dict.fromkeys(services or (), True),
            group=group,
        )
        try:
            async with self.placement.placing(target.name, size):
                await self.run_vm(target, server)
        except BaseException:
            self._names.discard(name)
            raise
        self.servers[server.id] = server
        if group is not None:
            self.groups.join(group, server.id)
        self.emit_server(server)
        return server

    async def delete_server(self, server_id: str) -> None:
        server = self.server(server_id)
        async with self.lock(server_id):
            with contextlib.suppress(LabError):
                await self.halt_vm(self.host(server.host), server)
            if self.servers.pop(server_id, None) is not None:
                self._names.discard(server.name)
                self.groups.leave(server_id)
                self.emit_server(server, "delete")
        self._locks.pop(server_id, None)

    def reset_state(self, server_id: str, state: str) -> ServerRecord:
        server = self.server(server_id)
        status = _reset_status(state)
        if server.status != status:
            server.status = status
            self.emit_server(server)
        return server

    def reset_states(
        self, server_ids: list[str], state: str
    ) -> tuple[list[ServerRecord], dict[str, str]]:
        """`reset_state` for each; the servers set, and why each other one was not."""
        _reset_status(state)  # a wrong state refuses the whole request
        done: list[ServerRecord] = []
        refused: dict[str, str] = {}
        for server_id in server_ids:
            try:
                done.append(self.reset_state(server_id, state))
            except LabError as exc:
                refused[server_id] = exc.message
        return done, refused

    async def stop_server(self, server_id: str) -> ServerRecord:
        server = self.server(server_id)
        async with self.lock(server_id):
            if server.status == "SHUTOFF":
                raise LabError(409, f"server {server.name} is already stopped")
            host = self.host(server.host)
            if not host.alive:
                raise LabError(409, f"host {host.name} of server {server.name} is not running")
            await self.halt_vm(host, server)
            server.status = "SHUTOFF"
            self.emit_server(server)
        return server

    async def _vm_running(self, host: HostRecord, server: ServerRecord) -> bool:
        try:
            vm = await host.proc.vm(server.name)
        except HostCallError as exc:
            raise LabError(502, f"asking {host.name} about {server.name} failed: {exc}") from exc
        return vm is not None and bool(vm["alive"])

    async def start_server(self, server_id: str) -> ServerRecord:
        """Start a stopped server, or one whose VM died (killed) while the VIM thought it ran."""
        server = self.server(server_id)
        async with self.lock(server_id):
            host = self.host(server.host)
            if server.status != "SHUTOFF" and (
                not host.alive or await self._vm_running(host, server)
            ):
                raise LabError(409, f"server {server.name} is {server.status}, not SHUTOFF")
            if not host.alive:
                raise LabError(409, f"host {host.name} of server {server.name} is not running")
            await self.run_vm(host, server, announce=True)
            if server.status != "ACTIVE":
                server.status = "ACTIVE"
                self.emit_server(server)
        return server

    async def restart_server(self, server_id: str) -> ServerRecord:
        """A hard reboot: the VM's process is replaced, whatever state it was in."""
        server = self.server(server_id)
        async with self.lock(server_id):
            host = self.host(server.host)
            if not host.alive:
                raise LabError(409, f"host {host.name} of server {server.name} is not running")
            await self.halt_vm(host, server)
            await self.run_vm(host, server, announce=True)
            if server.status != "ACTIVE":
                server.status = "ACTIVE"
                self.emit_server(server)
        return server

    async def kill_server(self, server_id: str) -> dict[str, Any]:
        """SIGKILL the server's VM process. The VIM is not told; the host reports the exit."""
        server = self.server(server_id)
        async with self.lock(server_id):
            host = self.host(server.host)
            if not host.alive or not await self._vm_running(host, server):
                raise LabError(409, f"server {server.name} is not running")
            try:
                t00 = await host.proc.kill_vm(server.name)
            except HostCallError as exc:
                raise LabError(502, f"killing {server.name} on {host.name} failed: {exc}") from exc
        fault = {
            "server_id": server.id, "server_name": server.name, "host": host.name,
            "t00": t00, "kind": "vm-kill",
        }  # fmt: skip
        self.faults.append(fault)
        log.info("killed %s on %s at %.6f", server.name, host.name, t00)
        return fault

    async def set_app(
        self,
        server_id: str,
        *,
        role: str | None = None,
        healthy: bool | None = None,
        service: str | None = None,
    ) -> ServerRecord:
        return await apps.set_app(self, server_id, role=role, healthy=healthy, service=service)

    # ----- moving servers (the moves themselves are in `moves`) -------------------------

    async def migrate(self, server_id: str, target_host: str | None = None) -> ServerRecord:
        return await moves.migrate(self, server_id, target_host)

    async def live_migrate(self, server_id: str, target_host: str | None = None) -> ServerRecord:
        return await moves.live_migrate(self, server_id, target_host)

    async def evacuate(self, server_id: str, target_host: str | None = None) -> ServerRecord:
        return await moves.evacuate(self, server_id, target_host)

    async def rebuild(self, server_id: str) -> ServerRecord:
        return await apps.rebuild(self, server_id)

    async def refresh_services(self) -> None:
        await apps.refresh_services(self)


def _reset_status(state: str) -> str:
    """The server status a reset-state request's `state` stands for."""
    status = {"error": "ERROR", "active": "ACTIVE"}.get(state)
    if status is None:
        raise LabError(400, f"state must be 'error' or 'active', got {state!r}")
    return status
