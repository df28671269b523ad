"""A lab compute host: answers heartbeats, runs VMs on request, reports their faults.

`python -m opendoctor.lab.procs.host --name N --address A [--alt-address B] --heartbeat-port H
--control-port C --vm-mode process|inline`

* UDP (A, H), and (B, H) if given: heartbeat probes answered with
  `encode_answer(seq, name)`, by a thread of its own at a high priority, whatever the
  event loop is doing (`opendoctor.lab.procs.responder`). B is the host's second path
  (think: its storage network); a cut link silences A only.
* TCP (A, C): the control channel, one JSON object per line each way; answers
  `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. Requests:
  - `{"op": "start_vm", "name", "address", "port", "instance_id"?, "role"?,
    "healthy"?, "services"?, "announce"?}` (`announce`: report the start to the events
    sink; `services`: `{name: healthy}` of the VM's named services),
  - `{"op": "stop_vm", "name"}`, `{"op": "kill_vm", "name"}` (answers `t00`),
  - `{"op": "set_vm", "name", "role"?, "healthy"?, "service"?}` (`service`: the flag
    is that service's), `{"op": "vm", "name"}`,
  - `{"op": "list"}`, `{"op": "events_sink", "url", "token", "hostlink_url"?}`
    (the host link's base URL; by default derived from `url`), `{"op": "events_status"}`,
  - `{"op": "cut_link"}`: probes on A go unanswered from now on, as if its link were
    cut; everything else (B, control, VMs, events) carries on. `{"op": "restore_link"}`:
    A answers again. Both answer `link` ("up" | "cut") and `t00` (just before).
  - `{"op": "set_loss", "fraction", "path"?}`: from now on each probe answer on A
    (`path` "primary"), B ("alt") or both (the default) is dropped at random with
    probability `fraction` (0 <= fraction < 1; 0: none), each path on its own. Answers
    `loss` (`{"primary", "alt"}`). A host starts, and starts again, without loss.
* Events: a VM that exits without being asked to stop is reported to the events
  sink (`compute.instance.lifecycle.exited`, status `down`) at once, and its next
  start on this host as status `up` (see `opendoctor.lab.procs.events`).
* Host link (`opendoctor.lab.procs.hostlink`): the VMs' server-group messages and
  service states go up to the service, its down messages to the VMs; VM starts, stops
  and exits go up as instance states.

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
import sys
import time
from typing import Any

from opendoctor.lab.procs.events import EventSender, lifecycle_event
from opendoctor.lab.procs.guest import GuestHeartbeats
from opendoctor.lab.procs.hostlink import HostLink, hostlink_base
from opendoctor.lab.procs.hostvm import VmError, VmHandle
from opendoctor.lab.procs.responder import PathFlags, Responder
from opendoctor.lab.procs.vm import ROLES
from opendoctor.lab.spec import loss_problem, services_problem

log = logging.getLogger("opendoctor.lab.procs.host")

_MAX_LINE = 64 * 1024
# Seconds a busy main thread keeps the GIL while the heartbeat thread waits for it (the
# default 5 ms is half a 10 ms beat).
_SWITCH_INTERVAL = 0.0005


class ControlError(Exception):
    """A control request that cannot be done; its message goes back to the caller."""


def _loss_request(request: dict[str, Any]) -> tuple[float, str]:
    fraction, path = request.get("fraction"), request.get("path", "both")
    if (problem := loss_problem(fraction, path)) is not None:
        raise ControlError(f"set_loss: {problem}")
    assert isinstance(fraction, int | float) and isinstance(path, str)
    return float(fraction), path


def _opt_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"'{key}' must be a string or null")
    return value


class LabHost:
    def __init__(
        self,
        name: str,
        address: str,
        heartbeat_port: int,
        control_port: int,
        vm_mode: str,
        socket_dir: str | None = None,
        alt_address: str | None = None,
    ) -> None:
        if vm_mode not in ("process", "inline"):
            raise ValueError(f"unknown vm mode {vm_mode!r}")
        self.name = name
        self.address = address
        self.alt_address = alt_address
        self.heartbeat_port = heartbeat_port
        self.control_port = control_port
        self.vm_mode = vm_mode
        self.vms: dict[str, VmHandle] = {}
        self.events = EventSender()
        self.link = HostLink(name, self._down, self._linked)
        self._primary = PathFlags()
        self._alt = PathFlags()
        self._responder: Responder | None = None
        self._control: asyncio.Server | None = None
        self._starting: dict[str, asyncio.Lock] = {}
        # Instances whose exit this host reported: their next start here is reported too.
        self._reported_down: set[str] = set()
        # Guest heartbeats, when the host has a directory for its VMs' sockets.
        self.guests = (
            GuestHeartbeats(name, socket_dir, self.events.report, self.link.send, self._restarted)
            if socket_dir
            else None
        )
        self._detaching: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        paths = [(self.address, self._primary)]
        if self.alt_address is not None:
            paths.append((self.alt_address, self._alt))
        self._responder = Responder(self.name, paths, self.heartbeat_port)
        self._responder.start()
        self._control = await asyncio.start_server(
            self._serve_control, self.address, self.control_port, limit=_MAX_LINE
        )
        self.events.start()
        self.link.start()

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._responder is not None:
            self._responder.close()
        await asyncio.gather(*(self.stop_vm(n) for n in list(self.vms)), return_exceptions=True)
        if self.guests is not None:
            await self.guests.close()
        await self.link.close()
        await self.events.close()

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
        except (ControlError, VmError) as exc:
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
                "link": self._link(),
                "loss": self._loss(),
                "vms": [self._vm_json(vm) for vm in self.vms.values()],
            }
        if op == "events_sink":
            url, token = _opt_str(request, "url"), _opt_str(request, "token")
            self.events.configure(url, token)
            await self.link.configure(hostlink_base(url, _opt_str(request, "hostlink_url")), token)
            return {"events": self.events.stats(), "hostlink": self.link.stats()}
        if op == "events_status":
            return {"events": self.events.stats(), "hostlink": self.link.stats()}
        if op in ("cut_link", "restore_link"):
            t00 = time.time()
            self._primary.answering = op == "restore_link"
            log.warning("%s: link %s", self.name, self._link())
            return {"link": self._link(), "t00": t00}
        if op == "set_loss":
            fraction, path = _loss_request(request)
            for which in ("primary", "alt"):
                if path in (which, "both"):
                    (self._primary if which == "primary" else self._alt).loss = fraction
            log.warning("%s: heartbeat answers lost: %s", self.name, self._loss())
            return {"loss": self._loss()}
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError(f"{op}: 'name' must be a non-empty string")
        if op == "stop_vm":
            return {"stopped": await self.stop_vm(name)}
        if op == "start_vm":
            return {"vm": (await self._start_request(name, request)).to_dict()}
        if op == "vm":
            vm = self.vms.get(name)
            return {"vm": self._vm_json(vm) if vm is not None else None}
        if op not in ("set_vm", "kill_vm"):
            raise ControlError(f"unknown op {op!r}")
        vm = self.vms.get(name)
        if vm is None:
            raise ControlError(f"no vm named {name!r} on {self.name}")
        if op == "set_vm":
            keys = ("role", "healthy", "service")
            change: dict[str, Any] = {k: request[k] for k in keys if k in request}
            try:
                return {"vm": {**vm.to_dict(), **await vm.apply(change)}}
            except ValueError as exc:
                raise ControlError(str(exc)) from None
        return {"t00": await vm.kill(), "vm": vm.to_dict()}

    async def _start_request(self, name: str, request: dict[str, Any]) -> VmHandle:
        address, port = request.get("address"), request.get("port")
        if not isinstance(address, str) or not isinstance(port, int):
            raise ControlError("start_vm: 'address' (string) and 'port' (integer) needed")
        role = request.get("role", "active")
        healthy = request.get("healthy", True)
        if role not in ROLES or not isinstance(healthy, bool):
            raise ControlError("start_vm: 'role' must be active|standby, 'healthy' a boolean")
        services = request.get("services") or {}
        if (problem := services_problem(services)) is not None:
            raise ControlError(f"start_vm: 'services' {problem}")
        vm = VmHandle(name, address, port, _opt_str(request, "instance_id") or name, role, healthy)
        vm.services = dict(services)
        return await self.start_vm(vm, announce=request.get("announce") is True)

    async def start_vm(self, vm: VmHandle, announce: bool = False) -> VmHandle:
        lock = self._starting.setdefault(vm.name, asyncio.Lock())
        async with lock:
            current = self.vms.get(vm.name)
            if current is not None and current.alive:
                if (current.address, current.port) == (vm.address, vm.port):
                    return current  # a repeated request: already done
                raise ControlError(f"vm {vm.name} already runs on {current.address}:{current.port}")
            self.vms.pop(vm.name, None)
            vm.on_exit = self._vm_exited
            await self._start_with_guest(vm)
            self.vms[vm.name] = vm
            log.info("%s: started vm %s on %s:%d", self.name, vm.name, vm.address, vm.port)
            self._instance_state(vm, "started", "process started")
            if announce or vm.instance_id in self._reported_down:
                self._reported_down.discard(vm.instance_id)
                self.events.report(
                    lifecycle_event(self.name, vm.instance_id, vm.name, "up", "process started")
                )
            return vm

    async def _start_with_guest(self, vm: VmHandle) -> None:
        guests = self.guests
        if guests is None:
            await vm.start(self.vm_mode)
            return
        pending = self._detaching.pop(vm.instance_id, None)
        if pending is not None:
            await pending  # the previous incarnation's supervision must end first
        path = await guests.attach(vm.instance_id, vm.name)
        vm.heartbeat_socket, vm.app_socket = path, guests.app_socket(vm.name)
        args = ["--hb-socket", path, "--instance-id", vm.instance_id, "--app-socket", vm.app_socket]
        try:
            await vm.start(self.vm_mode, args)
        except BaseException:
            await guests.detach(vm.instance_id, crashed=True)
            raise
        if vm.inline is not None:
            guests.run_agent(vm.instance_id, path, vm.inline)

    def _link(self) -> str:
        return "up" if self._primary.answering else "cut"

    def _loss(self) -> dict[str, float]:
        return {"primary": self._primary.loss, "alt": self._alt.loss}

    def _vm_json(self, vm: VmHandle) -> dict[str, Any]:
        state = self.guests.state(vm.instance_id) if self.guests is not None else None
        return {**vm.to_dict(), "heartbeat": state}

    # ----- host link ----------------------------------------------------------------------

    def _down(self, message: dict[str, Any]) -> None:
        if self.guests is not None:
            self.guests.supervisor.deliver(message)

    def _linked(self) -> None:
        """The stream is open (again): the service hears every VM's services once more."""
        if self.guests is not None:
            self.guests.supervisor.relay.resend()

    def _instance_state(self, vm: VmHandle, state: str, reason: str | None) -> None:
        message = {"type": "instance-state", "instance_id": vm.instance_id, "state": state}
        self.link.send({**message, "reason": reason})

    def _restarted(self, instance_id: str, service: str, ok: bool) -> None:
        for vm in self.vms.values():
            if vm.instance_id == instance_id and ok:
                vm.restarted(service)

    def _vm_exited(self, vm: VmHandle, reason: str) -> None:
        if self.vms.get(vm.name) is not vm:
            return  # an old incarnation
        log.warning("%s: vm %s: %s", self.name, vm.name, reason)
        self._reported_down.add(vm.instance_id)
        self.events.report(lifecycle_event(self.name, vm.instance_id, vm.name, "down", reason))
        self._instance_state(vm, "failed", reason)
        if self.guests is not None:
            # Its exit is reported already: a missed heartbeat would only say it again.
            task = asyncio.create_task(self.guests.detach(vm.instance_id, crashed=True))
            self._detaching[vm.instance_id] = task
            task.add_done_callback(lambda _: self._forget_detach(vm.instance_id, task))

    def _forget_detach(self, instance_id: str, task: asyncio.Task[None]) -> None:
        if self._detaching.get(instance_id) is task:
            del self._detaching[instance_id]

    async def stop_vm(self, name: str) -> bool:
        vm = self.vms.pop(name, None)
        if vm is None:
            return False
        if self.guests is not None:
            await self.guests.detach(vm.instance_id, crashed=not vm.alive)
        await vm.stop()
        log.info("%s: stopped vm %s", self.name, name)
        self._instance_state(vm, "stopped", "stopped on request")
        return True


async def _main(args: argparse.Namespace) -> int:
    host = LabHost(
        args.name, args.address, args.heartbeat_port, args.control_port, args.vm_mode,
        args.socket_dir, args.alt_address,
    )  # fmt: skip
    try:
        await host.start()
    except OSError as exc:
        where = " and ".join(a for a in (args.address, args.alt_address) if a)
        log.error("%s: cannot listen on %s: %s", args.name, where, exc)
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
    parser.add_argument(
        "--alt-address", default=None, help="a second address that answers heartbeats"
    )
    parser.add_argument("--heartbeat-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--vm-mode", choices=("process", "inline"), default="process")
    parser.add_argument(
        "--socket-dir", default=None, help="guest heartbeat sockets go here (none: no heartbeats)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    sys.setswitchinterval(_SWITCH_INTERVAL)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
