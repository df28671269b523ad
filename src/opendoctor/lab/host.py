"""A lab compute host: answers heartbeats, runs VMs on request.

`python -m opendoctor.lab.host --name N --address A --heartbeat-port H
--control-port C --vm-mode process|inline`

* UDP (A, H): heartbeat probes answered with `encode_answer(seq, name)`.
* TCP (A, C): the control channel, one JSON object per line each way:
  `{"op": "start_vm", "name", "address", "port"}`, `{"op": "stop_vm", "name"}`,
  `{"op": "list"}`; answers `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.

In "process" mode each VM is a child process in the host's process group that is
killed when the host dies, so killing the host's group is a power loss. In
"inline" mode the host serves the VMs' HTTP itself (benchmarks with 1,000 VMs).
Standard library only, so that a host starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

from opendoctor.lab.proc import die_with_parent
from opendoctor.lab.vm import VmServer, serve_vm
from opendoctor.monitor.hostwire import decode_probe, encode_answer

log = logging.getLogger("opendoctor.lab.host")

VM_START_TIMEOUT = 10.0
_MAX_LINE = 64 * 1024


class ControlError(Exception):
    """A control request that cannot be done; its message goes back to the caller."""


@dataclass(slots=True)
class VmHandle:
    name: str
    address: str
    port: int
    proc: asyncio.subprocess.Process | None = None
    inline: VmServer | None = None

    @property
    def alive(self) -> bool:
        return self.inline is not None or (self.proc is not None and self.proc.returncode is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "pid": self.proc.pid if self.proc is not None else os.getpid(),
            "alive": self.alive,
        }


class _Heartbeat(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        seq = decode_probe(data)
        if seq is not None and self.transport is not None:
            self.transport.sendto(encode_answer(seq, self.name), addr)


async def _answers_http(address: str, port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection(address, port)
    except OSError:
        return False
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        return status.startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        writer.close()


class LabHost:
    def __init__(
        self, name: str, address: str, heartbeat_port: int, control_port: int, vm_mode: str
    ) -> None:
        if vm_mode not in ("process", "inline"):
            raise ValueError(f"unknown vm mode {vm_mode!r}")
        self.name = name
        self.address = address
        self.heartbeat_port = heartbeat_port
        self.control_port = control_port
        self.vm_mode = vm_mode
        self.vms: dict[str, VmHandle] = {}
        self._heartbeat: asyncio.DatagramTransport | None = None
        self._control: asyncio.Server | None = None
        self._starting: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Heartbeat(self.name), local_addr=(self.address, self.heartbeat_port)
        )
        self._heartbeat = transport
        self._control = await asyncio.start_server(
            self._serve_control, self.address, self.control_port, limit=_MAX_LINE
        )

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._heartbeat is not None:
            self._heartbeat.close()
        await asyncio.gather(*(self.stop_vm(n) for n in list(self.vms)), return_exceptions=True)

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                answer = await self.handle(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            # ValueError: a line longer than the limit; the peer is not speaking our protocol.
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("request must be a JSON object")
            return {"ok": True, **await self._dispatch(request)}
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"bad JSON: {exc}"}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # the host must survive any request
            log.exception("control request failed")
            return {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "list":
            return {
                "host": self.name,
                "pid": os.getpid(),
                "vms": [vm.to_dict() for vm in self.vms.values()],
            }
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError(f"{op}: 'name' must be a non-empty string")
        if op == "stop_vm":
            return {"stopped": await self.stop_vm(name)}
        if op == "start_vm":
            address, port = request.get("address"), request.get("port")
            if not isinstance(address, str) or not isinstance(port, int):
                raise ControlError("start_vm: 'address' (string) and 'port' (integer) needed")
            return {"vm": (await self.start_vm(name, address, port)).to_dict()}
        raise ControlError(f"unknown op {op!r}")

    async def start_vm(self, name: str, address: str, port: int) -> VmHandle:
        lock = self._starting.setdefault(name, asyncio.Lock())
        async with lock:
            current = self.vms.get(name)
            if current is not None and current.alive:
                if (current.address, current.port) == (address, port):
                    return current  # a repeated request: already done
                raise ControlError(f"vm {name} already runs on {current.address}:{current.port}")
            self.vms.pop(name, None)
            vm = VmHandle(name, address, port)
            if self.vm_mode == "inline":
                try:
                    vm.inline = await serve_vm(name, address, port)
                except OSError as exc:
                    msg = f"vm {name}: cannot listen on {address}:{port}: {exc}"
                    raise ControlError(msg) from exc
            else:
                vm.proc = await self._spawn(name, address, port)
            self.vms[name] = vm
            log.info("%s: started vm %s on %s:%d", self.name, name, address, port)
            return vm

    async def _spawn(self, name: str, address: str, port: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opendoctor.lab.vm",
            "--name", name, "--address", address, "--port", str(port),
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        deadline = time.monotonic() + VM_START_TIMEOUT
        while not await _answers_http(address, port):
            if proc.returncode is not None:
                raise ControlError(f"vm {name} exited with code {proc.returncode} while starting")
            if time.monotonic() >= deadline:
                proc.kill()
                await proc.wait()
                raise ControlError(f"vm {name} did not serve within {VM_START_TIMEOUT} s")
            await asyncio.sleep(0.01)
        return proc

    async def stop_vm(self, name: str) -> bool:
        vm = self.vms.pop(name, None)
        if vm is None:
            return False
        if vm.inline is not None:
            await vm.inline.close()
        if vm.proc is not None and vm.proc.returncode is None:
            vm.proc.kill()  # a VM has nothing to save; stopping it is pulling its plug
            await vm.proc.wait()
        log.info("%s: stopped vm %s", self.name, name)
        return True


async def _main(args: argparse.Namespace) -> int:
    host = LabHost(args.name, args.address, args.heartbeat_port, args.control_port, args.vm_mode)
    try:
        await host.start()
    except OSError as exc:
        log.error("%s: cannot listen on %s: %s", args.name, args.address, exc)
        return 1
    log.info("%s: up on %s (pid %d, %s VMs)", args.name, args.address, os.getpid(), args.vm_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await host.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A lab compute host.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--heartbeat-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--vm-mode", choices=("process", "inline"), default="process")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
