"""One VM as its host runs it: a child process (or an inline server), its settings, its exit.

In process mode the host talks to the VM over the child's stdin/stdout (settings in,
settings out, one JSON line each) and waits on the child, so it learns of an exit the
moment it happens. Standard library only: hosts import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.infra.procs import die_with_parent
from opendoctor.lab.procs.events import exit_reason
from opendoctor.lab.procs.vm import VmServer, check_role, serve_vm

VM_START_TIMEOUT = 10.0
SETTINGS_TIMEOUT = 5.0


class VmError(Exception):
    """A VM could not be started or reached; the message goes back to the caller."""


async def _answers_http(address: str, port: int) -> bool:
    """Whether anything answers HTTP there (a standby VM answers 503: that counts)."""
    try:
        reader, writer = await asyncio.open_connection(address, port)
    except OSError:
        return False
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        return status.startswith(b"HTTP/1.1 ")
    except OSError:
        return False
    finally:
        writer.close()


ExitCallback = Callable[["VmHandle", str], None]


@dataclass(slots=True, eq=False)
class VmHandle:
    name: str
    address: str
    port: int
    instance_id: str
    role: str = "active"
    healthy: bool = True
    # Named services: their health flags, and the restarts their agent reported.
    services: dict[str, bool] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    heartbeat_socket: str | None = None
    app_socket: str | None = None
    proc: asyncio.subprocess.Process | None = None
    inline: VmServer | None = None
    # Asked to stop: its exit is nobody's fault and is not reported.
    stopping: bool = False
    exit_reason: str | None = None
    on_exit: ExitCallback | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _watcher: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.inline is not None or (self.proc is not None and self.proc.returncode is None)

    async def health(self) -> tuple[bool, str | None]:
        """The health flag, as an inline VM's guest agent reports it."""
        return (True, None) if self.healthy else (False, f"{self.name} reports itself unhealthy")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance_id": self.instance_id,
            "address": self.address,
            "port": self.port,
            "pid": self.proc.pid if self.proc is not None else os.getpid(),
            "alive": self.alive,
            "role": self.role,
            "healthy": self.healthy,
            "exit_reason": self.exit_reason,
            "heartbeat_socket": self.heartbeat_socket,
            "app_socket": self.app_socket,
            "services": [
                {"name": n, "healthy": ok, "restarts": self.restarts.get(n, 0)}
                for n, ok in self.services.items()
            ],
        }

    def restarted(self, service: str) -> None:
        """Its agent restarted a service: the service's flag is up again (as in the VM)."""
        if service in self.services:
            self.services[service] = True
            self.restarts[service] = self.restarts.get(service, 0) + 1

    # ----- starting -----------------------------------------------------------------------

    async def start(self, mode: str, guest_args: list[str] | None = None) -> None:
        """Serve the VM; `guest_args` go to a VM process (its guest agent's channel)."""
        if mode == "inline":
            try:
                self.inline = await serve_vm(
                    self.name, self.address, self.port, role=self.role, healthy=self.healthy,
                    services=self.services,
                )  # fmt: skip
            except OSError as exc:
                msg = f"vm {self.name}: cannot listen on {self.address}:{self.port}: {exc}"
                raise VmError(msg) from exc
            return
        self.proc = await self._spawn(guest_args or [])
        self._watcher = asyncio.create_task(self._watch(self.proc))

    async def _spawn(self, extra: list[str]) -> asyncio.subprocess.Process:
        args = ["--name", self.name, "--address", self.address, "--port", str(self.port)]
        args += ["--role", self.role, *([] if self.healthy else ["--unhealthy"]), *extra]
        for service, ok in self.services.items():
            args += ["--service" if ok else "--unhealthy-service", service]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opendoctor.lab.procs.vm", *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        deadline = time.monotonic() + VM_START_TIMEOUT
        while not await _answers_http(self.address, self.port):
            if proc.returncode is not None:
                raise VmError(f"vm {self.name} exited with code {proc.returncode} while starting")
            if time.monotonic() >= deadline:
                proc.kill()
                await proc.wait()
                raise VmError(f"vm {self.name} did not serve within {VM_START_TIMEOUT} s")
            await asyncio.sleep(0.01)
        return proc

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self.stopping:
            return
        self._exited(exit_reason(code))

    def _exited(self, reason: str) -> None:
        self.exit_reason = reason
        if self.on_exit is not None:
            self.on_exit(self, reason)

    # ----- settings -----------------------------------------------------------------------

    async def apply(self, change: dict[str, Any]) -> dict[str, Any]:
        """Set `role` and/or `healthy` (of `service`, if named); a VM that does not run
        takes them when it starts."""
        service = change.get("service")
        if service is not None and service not in self.services:
            raise ValueError(f"vm {self.name} has no service named {service!r}")
        role = check_role(change["role"]) if "role" in change else self.role
        current = self.healthy if service is None else self.services[service]
        healthy = change.get("healthy", current)
        if not isinstance(healthy, bool):
            raise ValueError(f"healthy must be true or false, got {healthy!r}")
        settings: dict[str, Any] = {"role": role, "healthy": healthy}
        if service is not None:
            settings["service"] = service
        async with self._lock:
            if self.inline is not None:
                self.inline.apply(settings)
            elif self.alive and self.proc is not None:
                await self._tell_process(self.proc, settings)
            self.role = role
            if service is None:
                self.healthy = healthy
            else:
                self.services[service] = healthy
        return {"role": self.role, "healthy": self.healthy, "services": self.to_dict()["services"]}

    async def _tell_process(self, proc: asyncio.subprocess.Process, change: dict[str, Any]) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise VmError(f"vm {self.name} has no settings channel")
        try:
            async with asyncio.timeout(SETTINGS_TIMEOUT):
                proc.stdin.write(json.dumps(change).encode() + b"\n")
                await proc.stdin.drain()
                line = await proc.stdout.readline()
        except (OSError, TimeoutError) as exc:
            raise VmError(f"vm {self.name} did not take its settings: {exc!r}") from exc
        if not line:
            raise VmError(f"vm {self.name} exited before taking its settings")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise VmError(f"vm {self.name} refused its settings: {answer.get('error')}")

    # ----- ending -------------------------------------------------------------------------

    async def kill(self) -> float:
        """The VM's process dies as if killed by the OOM killer; returns T00 (just before).

        Reported to the sink like any exit the host did not ask for.
        """
        if not self.alive:
            raise VmError(f"vm {self.name} is not running")
        if self.inline is not None:
            # Inline: the host's own process cannot die for one VM; stop serving abruptly.
            t00 = time.time()
            server, self.inline = self.inline, None
            await server.close()
            self._exited(exit_reason(-signal.SIGKILL))
            return t00
        assert self.proc is not None
        t00 = time.time()
        self.proc.kill()
        await self.proc.wait()
        if self._watcher is not None:
            # The watcher has reported the exit by the time the kill request is answered.
            await asyncio.shield(self._watcher)
        return t00

    async def stop(self) -> None:
        self.stopping = True
        if self.inline is not None:
            server, self.inline = self.inline, None
            await server.close()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()  # a VM has nothing to save; stopping it is pulling its plug
            await proc.wait()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
