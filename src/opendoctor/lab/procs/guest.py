"""Guest heartbeats on a lab host: a supervisor for the host, an agent in each VM.

Each VM gets a Unix socket (the lab's stand-in for a virtio-serial port) on which the
host's `HeartbeatSupervisor` listens; the VM's `GuestAgent` connects to it and answers
the host's challenges with the VM's health flag and its services' flags. In process
mode the agent runs in the VM's process (so a hung process misses its challenges); in
inline mode the host runs it for the VM. The supervisor's reports go to the host's
events sink, its server-group and service messages to the host link (`uplink`). Each
VM's agent also offers its applications a socket (`<dir>/<name>.app.sock`) for
server-group messaging.
Standard library only (plus `opendoctor.heartbeat`, which is too): hosts import it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

from opendoctor.heartbeat.agent import GuestAgent, Service
from opendoctor.heartbeat.hostrelay import Restarted, Uplink
from opendoctor.heartbeat.hostside import HeartbeatSupervisor
from opendoctor.lab.procs.vm import VmServer, cancel_until_done

# AF_UNIX paths hold 107 bytes (108 with the terminating NUL).
MAX_SOCKET_PATH = 107
SUFFIX = ".hb.sock"
APP_SUFFIX = ".app.sock"


def socket_path(directory: str, name: str, suffix: str = SUFFIX) -> str:
    """`<dir>/<name>.hb.sock` (or another suffix), or a hashed name where that would be
    too long."""
    path = os.path.join(directory, name + suffix)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH and "/" not in name:
        return path
    digest = hashlib.sha1(name.encode()).hexdigest()[:16]
    return os.path.join(directory, digest + suffix)


class GuestHeartbeats:
    """The host's guest-heartbeat supervision of its VMs."""

    def __init__(
        self,
        hostname: str,
        directory: str,
        report: Callable[[dict[str, Any]], None],
        uplink: Uplink | None = None,
        restarted: Restarted | None = None,
    ) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.supervisor = HeartbeatSupervisor(hostname, report, uplink=uplink, restarted=restarted)
        self._agents: dict[str, tuple[GuestAgent, asyncio.Task[None]]] = {}

    async def attach(self, instance_id: str, name: str) -> str:
        """Supervise a VM about to start; the path its agent connects to."""
        path = socket_path(self.directory, name)
        await self.supervisor.add_vm(instance_id, name, path)
        return path

    def app_socket(self, name: str) -> str:
        """Where the VM's agent offers its applications server-group messaging."""
        return socket_path(self.directory, name, APP_SUFFIX)

    def run_agent(self, instance_id: str, path: str, vm: VmServer) -> None:
        """Run the VM's agent inside the host (inline VMs)."""
        services = [Service(n, vm.service_check(n), vm.service_restart(n)) for n in vm.services]
        agent = GuestAgent(
            path, instance_id, vm.health, services=services, app_socket=self.app_socket(vm.name)
        )
        self._agents[instance_id] = (agent, asyncio.create_task(agent.run()))

    async def detach(self, instance_id: str, *, crashed: bool = False) -> None:
        """Stop supervising a VM (silently). `crashed`: its agent dies without a word."""
        running = self._agents.pop(instance_id, None)
        if running is not None:
            agent, task = running
            if not crashed:
                await agent.stop("vm stopping")
            await cancel_until_done(task)
        await self.supervisor.remove_vm(instance_id)

    def state(self, instance_id: str) -> str | None:
        """ "waiting", "missed", "unhealthy" or "ok"; None if not supervised."""
        try:
            return self.supervisor.state(instance_id)
        except KeyError:
            return None

    async def close(self) -> None:
        for instance_id in list(self._agents):
            await self.detach(instance_id)
        await self.supervisor.close()
