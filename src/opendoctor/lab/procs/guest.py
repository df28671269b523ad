"""Guest heartbeats on a lab host: a supervisor for the host, an agent in each VM.

Each VM gets a Unix socket (the lab's stand-in for a virtio-serial port) on which the
host's `HeartbeatSupervisor` listens; the VM's `GuestAgent` connects to it and answers
the host's challenges with the VM's health flag. In process mode the agent runs in
the VM's process (so a hung process misses its challenges); in inline mode the host
runs it for the VM. The supervisor's reports go to the host's events sink.
Standard library only (plus `opendoctor.heartbeat`, which is too): hosts import it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

from opendoctor.heartbeat.agent import GuestAgent
from opendoctor.heartbeat.hostside import HeartbeatSupervisor
from opendoctor.lab.procs.vm import cancel_until_done

# AF_UNIX paths hold 107 bytes (108 with the terminating NUL).
MAX_SOCKET_PATH = 107
SUFFIX = ".hb.sock"


def socket_path(directory: str, name: str) -> str:
    """`<dir>/<name>.hb.sock`, or a hashed name where that would be too long."""
    path = os.path.join(directory, name + SUFFIX)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH and "/" not in name:
        return path
    digest = hashlib.sha1(name.encode()).hexdigest()[:16]
    return os.path.join(directory, digest + SUFFIX)


class GuestHeartbeats:
    """The host's guest-heartbeat supervision of its VMs."""

    def __init__(
        self, hostname: str, directory: str, report: Callable[[dict[str, Any]], None]
    ) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.supervisor = HeartbeatSupervisor(hostname, report)
        self._agents: dict[str, tuple[GuestAgent, asyncio.Task[None]]] = {}

    async def attach(self, instance_id: str, name: str) -> str:
        """Supervise a VM about to start; the path its agent connects to."""
        path = socket_path(self.directory, name)
        await self.supervisor.add_vm(instance_id, name, path)
        return path

    def run_agent(self, instance_id: str, path: str, health: Any) -> None:
        """Run the VM's agent inside the host (inline VMs)."""
        agent = GuestAgent(path, instance_id, health)
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
