"""A lab VM: an HTTP server whose application has a role and a health flag.

* role `active`: every GET answers 200 `Served by <name>`;
* role `standby`: every GET answers 503 `standby: <name>`;
* the health flag (healthy by default) is what the guest reports through its
  heartbeat agent; it does not change the HTTP answers;
* named services (`--service NAME`, `--unhealthy-service NAME`), each with a health
  flag of its own that the agent reports per service; restarting a service through
  the agent raises its flag and counts the restart.

Run as `python -m opendoctor.lab.procs.vm --name N --address A --port P [--role R]
[--unhealthy] [--hb-socket PATH --instance-id ID]` (one process per VM), or call
`serve_vm` to serve it from inside a host process ("inline" mode). A VM process takes
settings from its host on stdin, one JSON object per line (`{"role": "standby"}`,
`{"healthy": false}`, `{"service": "db", "healthy": false}`), and answers each on
stdout with its settings after the change.
With `--hb-socket` it also runs a guest heartbeat agent (`opendoctor.heartbeat.agent`) on
that socket, reporting the health flag.
Standard library only: a host may start hundreds of these and each must be up fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROLES: tuple[str, ...] = ("active", "standby")

_MAX_HEAD = 16 * 1024
_MAX_BODY = 1024 * 1024


def _response(status: str, body: bytes, keep_alive: bool, head_only: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if status.startswith("405"):
        lines.append("Allow: GET, HEAD")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + body


def _keep_alive(version: bytes, connection: bytes) -> bool:
    if version == b"HTTP/1.1":
        return connection != b"close"
    return connection == b"keep-alive"


async def _serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Callable[[], tuple[str, bytes]],
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                writer.write(_response("431 Request Header Fields Too Large", b"", False))
                break
            request_line, _, header_block = head.partition(b"\r\n")
            parts = request_line.split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                writer.write(_response("400 Bad Request", b"bad request line\n", False))
                break
            method, _target, version = parts
            headers: dict[bytes, bytes] = {}
            for line in header_block.split(b"\r\n"):
                key, sep, value = line.partition(b":")
                if sep:
                    headers[key.strip().lower()] = value.strip().lower()
            if b"transfer-encoding" in headers:
                # Nobody sends chunked bodies to a VM; refusing keeps the parser tiny.
                writer.write(_response("501 Not Implemented", b"chunked bodies\n", False))
                break
            length = headers.get(b"content-length", b"0")
            if not length.isdigit() or int(length) > _MAX_BODY:
                writer.write(_response("400 Bad Request", b"bad content-length\n", False))
                break
            if int(length):
                await reader.readexactly(int(length))
            keep = _keep_alive(version, headers.get(b"connection", b""))
            if method in (b"GET", b"HEAD"):
                status, body = answer()
                writer.write(_response(status, body, keep, head_only=method == b"HEAD"))
            else:
                writer.write(_response("405 Method Not Allowed", b"GET only\n", keep))
            await writer.drain()
            if not keep:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def cancel_until_done(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it has ended.

    Cancelled again while it runs on: on Python 3.11 `asyncio.wait_for` (which the guest
    agent's health check uses) swallows a cancellation arriving as its inner task ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled() and task.exception() is not None:
        print(f"task {task.get_name()} failed: {task.exception()!r}", file=sys.stderr)


def check_role(role: object) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return str(role)


class VmServer:
    """One VM's HTTP listener plus its open connections, so stopping it drops them all."""

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        role: str = "active",
        healthy: bool = True,
        services: dict[str, bool] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.role = check_role(role)
        self.healthy = healthy
        self.services = dict(services or {})
        self.restarts = dict.fromkeys(self.services, 0)
        self._answers = {
            "active": ("200 OK", f"Served by {name}\n".encode()),
            "standby": ("503 Service Unavailable", f"standby: {name}\n".encode()),
        }
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def answer(self) -> tuple[str, bytes]:
        return self._answers[self.role]

    def settings(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "healthy": self.healthy,
            "services": dict(self.services),
            "restarts": dict(self.restarts),
        }

    def apply(self, change: dict[str, Any]) -> dict[str, Any]:
        """Take `role` and/or `healthy` (of `service`, if named) from `change`;
        ValueError (nothing changed) if bad."""
        role = check_role(change["role"]) if "role" in change else self.role
        service = change.get("service")
        if service is not None and service not in self.services:
            raise ValueError(f"{self.name} has no service named {service!r}")
        healthy = change.get("healthy", self.healthy if service is None else self.services[service])
        if not isinstance(healthy, bool):
            raise ValueError(f"healthy must be true or false, got {healthy!r}")
        self.role = role
        if service is None:
            self.healthy = healthy
        else:
            self.services[service] = healthy
        return self.settings()

    async def health(self) -> tuple[bool, str | None]:
        """The application's own verdict, as the guest heartbeat agent asks for it."""
        return (True, None) if self.healthy else (False, f"{self.name} reports itself unhealthy")

    def service_check(self, service: str) -> Callable[[], Awaitable[tuple[bool, str | None]]]:
        """The health check of one named service, as the agent runs it."""

        async def check() -> tuple[bool, str | None]:
            if self.services.get(service, False):
                return True, None
            return False, f"{service} on {self.name} reports itself unhealthy"

        return check

    def service_restart(self, service: str) -> Callable[[], Awaitable[tuple[bool, str | None]]]:
        """Restarting a service heals it (a fresh process) and counts."""

        async def restart() -> tuple[bool, str | None]:
            self.services[service] = True
            self.restarts[service] = self.restarts.get(service, 0) + 1
            return True, None

        return restart

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await _serve_connection(reader, writer, self.answer)
        finally:
            self._writers.discard(writer)

    async def start(self, bind_retry: float = 3.0) -> None:
        # The address may still be held for a moment by the VM's previous incarnation
        # (evacuation right after a power-off), so binding is retried for a while.
        deadline = time.monotonic() + bind_retry
        while True:
            try:
                self._server = await asyncio.start_server(
                    self._handle, self.address, self.port, limit=_MAX_HEAD
                )
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        # A stopped VM must not keep answering on keep-alive connections.
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


async def serve_vm(
    name: str,
    address: str,
    port: int,
    *,
    role: str = "active",
    healthy: bool = True,
    services: dict[str, bool] | None = None,
    bind_retry: float = 3.0,
) -> VmServer:
    """Start serving VM `name` on (address, port) in the running loop."""
    vm = VmServer(name, address, port, role, healthy, services)
    await vm.start(bind_retry)
    return vm


async def _follow_host(vm: VmServer) -> None:
    """Apply the host's settings lines from stdin; answer each on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        return  # started by hand with stdin a file: nobody to listen to
    while line := await reader.readline():
        try:
            change = json.loads(line)
            if not isinstance(change, dict):
                raise ValueError("expected a JSON object")
            answer: dict[str, Any] = {"ok": True, **vm.apply(change)}
        except (ValueError, KeyError) as exc:
            answer = {"ok": False, "error": str(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


async def _main(args: argparse.Namespace) -> int:
    services = dict.fromkeys(args.service, True) | dict.fromkeys(args.unhealthy_service, False)
    try:
        server = await serve_vm(
            args.name, args.address, args.port, role=args.role, healthy=not args.unhealthy,
            services=services,
        )  # fmt: skip
    except OSError as exc:
        print(
            f"vm {args.name}: cannot listen on {args.address}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_follow_host(server))]
    agent = None
    if args.hb_socket:
        # The guest heartbeat agent, answering its host with the application's health.
        from opendoctor.heartbeat.agent import GuestAgent, Service

        agent = GuestAgent(
            args.hb_socket,
            args.instance_id or args.name,
            server.health,
            services=[
                Service(n, server.service_check(n), server.service_restart(n))
                for n in server.services
            ],
            app_socket=args.app_socket,
        )
        tasks.append(asyncio.create_task(agent.run()))
    await stop.wait()
    if agent is not None:
        await agent.stop("vm shutting down")  # a clean exit, not a fault
    for task in tasks:
        await cancel_until_done(task)
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A lab VM: answers GET with 'Served by NAME'.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--role", choices=ROLES, default="active")
    parser.add_argument("--unhealthy", action="store_true", help="start with the flag down")
    parser.add_argument("--hb-socket", default=None, help="run a guest heartbeat agent on it")
    parser.add_argument("--instance-id", default=None, help="the agent's instance id")
    parser.add_argument("--service", action="append", default=[], help="a healthy service")
    parser.add_argument(
        "--unhealthy-service", action="append", default=[], help="a service, flag down"
    )
    parser.add_argument("--app-socket", default=None, help="the agent's application socket")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
