"""The manager's side of a lab host: its process, its control channel, its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from typing import Any

from opendoctor.lab.proc import die_with_parent, kill_group
from opendoctor.monitor.hostwire import decode_answer, encode_probe

log = logging.getLogger("opendoctor.lab.manager")

HOST_START_TIMEOUT = 15.0
CONTROL_TIMEOUT = 20.0


class HostCallError(Exception):
    """The host could not be reached or refused a control request."""


class _ProbeReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.answers.put_nowait(data)


async def heartbeat_answered(address: str, port: int, name: str, timeout: float = 0.2) -> bool:
    """Send one heartbeat probe and say whether `name` answered it in time."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _ProbeReply, remote_addr=(address, port)
        )
    except OSError:
        return False
    try:
        seq = int(time.monotonic_ns() & 0x7FFFFFFF)
        transport.sendto(encode_probe(seq))
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(proto.answers.get(), left)
            except TimeoutError:
                return False
            if decode_answer(data) == (seq, name):
                return True
        return False
    finally:
        transport.close()


class HostProc:
    """One host process as the manager runs it (own session, so its group is its own)."""

    def __init__(
        self, name: str, address: str, heartbeat_port: int, control_port: int, vm_mode: str
    ) -> None:
        self.name = name
        self.address = address
        self.heartbeat_port = heartbeat_port
        self.control_port = control_port
        self.vm_mode = vm_mode
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    async def launch(self, timeout: float = HOST_START_TIMEOUT) -> None:
        """Start the host process and return once it answers control requests and heartbeats."""
        if self.alive:
            raise HostCallError(f"host {self.name} is already running")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opendoctor.lab.host",
            "--name", self.name, "--address", self.address,
            "--heartbeat-port", str(self.heartbeat_port),
            "--control-port", str(self.control_port),
            "--vm-mode", self.vm_mode,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise HostCallError(
                    f"host {self.name} exited with code {self.proc.returncode} while starting"
                )
            if await self._ready():
                return
            if time.monotonic() >= deadline:
                await self.kill()
                raise HostCallError(f"host {self.name} did not come up within {timeout} s")
            await asyncio.sleep(0.01)

    async def _ready(self) -> bool:
        try:
            answer = await self.request({"op": "list"}, timeout=1.0)
        except HostCallError:
            return False
        if self.proc is None or answer.get("pid") != self.proc.pid:
            # Another lab's host holds this address; ours will fail to bind and exit.
            return False
        return await heartbeat_answered(self.address, self.heartbeat_port, self.name)

    async def kill(self) -> float:
        """Pull the plug: SIGKILL to the host's process group. Returns the time just before."""
        proc = self.proc
        t00 = time.time()
        if proc is None or proc.returncode is not None:
            return t00
        kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        return t00

    async def terminate(self, timeout: float = 3.0) -> None:
        """Stop politely (SIGTERM to the group), then kill what is left."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout)
        # VMs could outlive a host that ignored SIGTERM; the group kill catches them too.
        kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout)

    async def request(
        self, payload: dict[str, Any], timeout: float = CONTROL_TIMEOUT
    ) -> dict[str, Any]:
        """One control request on a fresh connection (cheap on loopback, no shared state)."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.address, self.control_port)
                writer.write(json.dumps(payload).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
        except (OSError, TimeoutError) as exc:
            raise HostCallError(f"host {self.name} unreachable: {exc or 'timed out'}") from exc
        finally:
            if writer is not None:
                writer.close()
        if not line:
            raise HostCallError(f"host {self.name} closed the control connection")
        try:
            answer = json.loads(line)
        except ValueError:
            raise HostCallError(f"host {self.name} answered garbage: {line[:200]!r}") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise HostCallError(f"host {self.name}: {error}")
        return answer

    async def start_vm(self, name: str, address: str, port: int) -> None:
        await self.request({"op": "start_vm", "name": name, "address": address, "port": port})

    async def stop_vm(self, name: str) -> None:
        await self.request({"op": "stop_vm", "name": name})
