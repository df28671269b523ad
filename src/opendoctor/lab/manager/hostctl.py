"""The manager's side of a lab host: its process, its control channel, its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opendoctor.infra.procs import die_with_parent
from opendoctor.lab.proc import kill_group
from opendoctor.wire.probe import decode_answer, encode_probe

log = logging.getLogger("opendoctor.lab.manager")

HOST_START_TIMEOUT = 15.0
CONTROL_TIMEOUT = 20.0


# Room for "/compute<n>/<vm name>.hb.sock" within AF_UNIX's 107 bytes.
_MAX_SOCKET_ROOT = 60


def socket_root(state_dir: Path | None) -> Path:
    """Where hosts keep their VMs' guest heartbeat sockets: `<state dir>/hosts` if that
    path is short enough, else a short directory of its own under /tmp."""
    if state_dir is not None:
        root = state_dir.absolute() / "hosts"
        if len(str(root)) <= _MAX_SOCKET_ROOT:
            return root
    return Path(tempfile.mkdtemp(prefix="od-hb-", dir="/tmp"))


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
        self,
        name: str,
        address: str,
        heartbeat_port: int,
        control_port: int,
        vm_mode: str,
        *,
        socket_dir: str | None = None,
        alt_address: str | None = None,
    ) -> None:
        """`socket_dir`: where the host puts its VMs' guest heartbeat sockets (None: no
        guest heartbeats); `alt_address`: a second address that answers heartbeats."""
        self.name = name
        self.socket_dir = socket_dir
        self.address = address
        self.alt_address = alt_address
        # Probes on `address` go unanswered (see set_link; a new process starts linked).
        self.link_cut = False
        # Share of answers dropped per path (see set_loss; a new process starts lossless).
        self.loss = {"primary": 0.0, "alt": 0.0}
        self.heartbeat_port = heartbeat_port
        self.control_port = control_port
        self.vm_mode = vm_mode
        self.proc: asyncio.subprocess.Process | None = None
        # Where the host sends its events (URL, token); given to it whenever it starts.
        self.events_sink: tuple[str | None, str | None] = (None, None)
        # The host link's base URL (None: derived from the events URL).
        self.hostlink_url: str | None = None

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
            sys.executable, "-m", "opendoctor.lab.procs.host",
            "--name", self.name, "--address", self.address,
            *(["--alt-address", self.alt_address] if self.alt_address else []),
            "--heartbeat-port", str(self.heartbeat_port),
            "--control-port", str(self.control_port),
            "--vm-mode", self.vm_mode,
            *(["--socket-dir", self.socket_dir] if self.socket_dir else []),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        self.link_cut = False
        self.loss = {"primary": 0.0, "alt": 0.0}
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise HostCallError(
                    f"host {self.name} exited with code {self.proc.returncode} while starting"
                )
            if await self._ready():
                if self.events_sink[0] is not None:
                    await self.push_events_sink()
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
        for address in (self.address, self.alt_address):
            if address and not await heartbeat_answered(address, self.heartbeat_port, self.name):
                return False
        return True

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

    async def start_vm(
        self,
        name: str,
        address: str,
        port: int,
        *,
        instance_id: str | None = None,
        role: str = "active",
        healthy: bool = True,
        announce: bool = False,
        services: dict[str, bool] | None = None,
    ) -> dict[str, Any]:
        """Start a VM and return once it serves; `announce` reports the start as an event,
        `services` are its named services' health flags."""
        request: dict[str, Any] = {"op": "start_vm", "name": name, "address": address}
        request |= {"port": port, "role": role, "healthy": healthy, "announce": announce}
        request["services"] = services or {}
        if instance_id is not None:
            request["instance_id"] = instance_id
        answer: dict[str, Any] = (await self.request(request))["vm"]
        return answer

    async def stop_vm(self, name: str) -> None:
        await self.request({"op": "stop_vm", "name": name})

    async def kill_vm(self, name: str) -> float:
        """SIGKILL the VM's process (inline: stop serving abruptly); T00, just before."""
        return float((await self.request({"op": "kill_vm", "name": name}))["t00"])

    async def set_vm(self, name: str, **settings: Any) -> dict[str, Any]:
        """Change a VM's `role` and/or `healthy` flag (of its `service`, if given)."""
        answer: dict[str, Any] = (await self.request({"op": "set_vm", "name": name, **settings}))[
            "vm"
        ]
        return answer

    async def vm(self, name: str) -> dict[str, Any] | None:
        """The host's view of one VM (`alive`, `pid`, ...), None if it has none by that name."""
        answer: dict[str, Any] | None = (await self.request({"op": "vm", "name": name}))["vm"]
        return answer

    async def set_link(self, up: bool) -> float:
        """Cut (`up=False`) or restore the link of the host's address: its probes there go
        unanswered, all else carries on. Returns the time just before the change."""
        answer = await self.request({"op": "restore_link" if up else "cut_link"})
        self.link_cut = answer["link"] == "cut"
        return float(answer["t00"])

    async def set_loss(self, fraction: float, path: str = "both") -> dict[str, float]:
        """Drop that share of the heartbeat answers on `path` (primary | alt | both) at
        random, each answer on its own; 0 stops it. The loss per path, as now set."""
        answer = await self.request({"op": "set_loss", "fraction": fraction, "path": path})
        self.loss = {k: float(v) for k, v in answer["loss"].items()}
        return self.loss

    async def push_events_sink(self) -> dict[str, Any]:
        """Tell the host where events go (`events_sink`); its sender's statistics."""
        url, token = self.events_sink
        request = {"op": "events_sink", "url": url, "token": token}
        answer = await self.request({**request, "hostlink_url": self.hostlink_url})
        return {**answer["events"], "hostlink": answer.get("hostlink")}

    async def events_status(self) -> dict[str, Any]:
        answer = await self.request({"op": "events_status"})
        return {**answer["events"], "hostlink": answer.get("hostlink")}

    async def vms(self, timeout: float = CONTROL_TIMEOUT) -> list[dict[str, Any]]:
        """Every VM as the host sees it (`list`)."""
        answer: list[dict[str, Any]] = (await self.request({"op": "list"}, timeout))["vms"]
        return answer
