"""Helpers for the lab tests: polling with a deadline, HTTP and heartbeat checks, process scans."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.lab.cli import app
from opendoctor.lab.client import LabClient, LabError
from opendoctor.lab.manager.hostctl import HostProc
from opendoctor.lab.runner import LabRunner
from opendoctor.wire.probe import decode_answer, encode_probe
from tests.conftest import eventually

__all__ = ["eventually"]


async def served_by(http: HttpClient, endpoint: str) -> str | None:
    """The VM's answer, or None if nothing answers."""
    try:
        resp = await http.get(endpoint, timeout=2.0)
    except HttpError:
        return None
    return resp.body.decode() if resp.status == 200 else None


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.answers.put_nowait(data)


async def heartbeat(address: str, port: int, timeout: float = 0.3) -> str | None:
    """Probe a host once; the host name it answers with, or None."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Probe, remote_addr=(address, port))
    try:
        transport.sendto(encode_probe(7))
        try:
            data = await asyncio.wait_for(proto.answers.get(), timeout)
        except TimeoutError:
            return None
        answer = decode_answer(data)
        return answer[1] if answer is not None and answer[0] == 7 else None
    finally:
        transport.close()


def processes_matching(text: str) -> list[str]:
    """Command lines (space-joined) of live processes containing `text`; zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def refused(call: Awaitable[object], status: int) -> LabError:
    """Await a lab call that must fail with `status`; returns the error."""
    try:
        await call
    except LabError as exc:
        assert exc.status == status, f"expected HTTP {status}, got {exc.status}: {exc}"
        return exc
    raise AssertionError(f"expected HTTP {status}, but the call succeeded")


def run_cli(cli: CliRunner, *args: str, code: int = 0) -> str:
    """`opendoctor lab ARGS...`'s output, once it exited with `code`."""
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


async def host_vm(lab: LabRunner, client: LabClient, server_id: str) -> dict[str, Any] | None:
    """The server's VM as its host sees it (`{"op": "vm"}`: pid, sockets, heartbeat)."""
    detail = await client.server_detail(server_id)
    host = next(h for h in await client.host_details() if h["name"] == detail["host"])
    proc = HostProc(host["name"], host["address"], 0, lab.spec.control_port, "process")
    return await proc.vm(detail["name"])
