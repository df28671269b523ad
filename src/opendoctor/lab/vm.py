"""A lab VM: an HTTP server that answers every GET with `Served by <name>`.

Run as `python -m opendoctor.lab.vm --name N --address A --port P` (one process per
VM), or call `serve_vm` to serve it from inside a host process ("inline" mode).
Standard library only: a host may start hundreds of these and each must be up fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
import time

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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
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
                writer.write(_response("200 OK", body, keep, head_only=method == b"HEAD"))
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


class VmServer:
    """One VM's HTTP listener plus its open connections, so stopping it drops them all."""

    def __init__(self, name: str, address: str, port: int) -> None:
        self.name = name
        self.address = address
        self.port = port
        self._body = f"Served by {name}\n".encode()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await _serve_connection(reader, writer, self._body)
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


async def serve_vm(name: str, address: str, port: int, *, bind_retry: float = 3.0) -> VmServer:
    """Start serving VM `name` on (address, port) in the running loop."""
    vm = VmServer(name, address, port)
    await vm.start(bind_retry)
    return vm


async def _main(name: str, address: str, port: int) -> int:
    try:
        server = await serve_vm(name, address, port)
    except OSError as exc:
        print(f"vm {name}: cannot listen on {address}:{port}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A lab VM: answers GET with 'Served by NAME'.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.name, args.address, args.port))


if __name__ == "__main__":
    sys.exit(main())
