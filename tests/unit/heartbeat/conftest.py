"""Fixtures for the guest heartbeat tests: a supervisor, agent processes, raw guests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from opendoctor.heartbeat.agent import GuestAgent
from opendoctor.heartbeat.hostside import HeartbeatSettings, HeartbeatSupervisor
from opendoctor.wire import heartbeat as p
from tests.conftest import eventually


class Host:
    """A supervisor under test with the reports it made."""

    def __init__(self, workdir: Path, settings: HeartbeatSettings | None = None) -> None:
        self.dir = workdir
        self.reports: list[dict[str, Any]] = []
        self.sup = HeartbeatSupervisor("host-1", self.reports.append, settings)

    def sock(self, vm: str) -> str:
        return str(self.dir / f"{vm}.sock")

    async def add(self, *vms: str) -> None:
        for vm in vms:
            await self.sup.add_vm(vm, f"{vm}-name", self.sock(vm))

    def of(self, vm: str, status: str | None = None) -> list[tuple[str, str]]:
        """(type suffix, status) of the reports about one VM, in order."""
        return [
            (e["type"].rsplit(".", 1)[1], e["details"]["status"])
            for e in self.reports
            if e["details"]["instance_id"] == vm and status in (None, e["details"]["status"])
        ]

    def count(self, name: str) -> int:
        return self.sup.counters.get(name, 0)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    h = Host(tmp_path)
    yield h
    await h.sup.close()


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[Callable[..., Host]]:
    """A supervisor with non-default settings, closed at the end."""
    made: list[Host] = []

    def make(**settings: Any) -> Host:
        made.append(Host(tmp_path, HeartbeatSettings(**settings)))
        return made[-1]

    yield make
    for h in made:
        await h.sup.close()


class Agents:
    """Guest-agent processes (`python -m opendoctor.heartbeat.cli`), all killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, channel: str, vm: str, *extra: str) -> asyncio.subprocess.Process:
        log = (self.dir / f"{vm}.agent.log").open("ab")
        with log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *(
                    "-m",
                    "opendoctor.heartbeat.cli",
                    "--channel",
                    channel,
                    "--instance-id",
                    vm,
                    *extra,
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def log(self, vm: str) -> str:
        return (self.dir / f"{vm}.agent.log").read_text()

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            await proc.wait()


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[Agents]:
    a = Agents(tmp_path)
    yield a
    await a.close()


class RawGuest:
    """A hand-driven guest on a raw socket: sends whatever a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lines = p.LineReader(reader)

    @classmethod
    async def connect(cls, path: str) -> RawGuest:
        return cls(*await asyncio.open_unix_connection(path))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, body: dict[str, Any], group: str = p.GROUP_HEARTBEAT) -> None:
        await self.send_raw(p.encode(group, body))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        line = await asyncio.wait_for(self.lines.readline(), timeout)
        return None if line is None else p.decode(line)[1]

    async def register(
        self, vm: str, interval_ms: int = 100, timeout_ms: int = 80
    ) -> dict[str, Any]:
        await self.send(
            {
                "type": "init",
                "instance_id": vm,
                "agent": "raw-test/1",
                "heartbeat_interval_ms": interval_ms,
                "response_timeout_ms": timeout_ms,
                "health_check": False,
            }
        )
        ack = await self.recv()
        assert ack is not None and ack["type"] == "init-ack", ack
        return ack

    async def challenge(self) -> dict[str, Any]:
        msg = await self.recv()
        assert msg is not None and msg["type"] == "challenge-request", msg
        return msg

    async def answer(
        self, challenge: dict[str, Any], healthy: bool = True, reason: str | None = None
    ) -> None:
        await self.send(
            {
                "type": "challenge-response",
                "seq": challenge["seq"],
                "challenge": challenge["challenge"],
                "healthy": healthy,
                "reason": reason,
            }
        )

    async def closed_by_host(self) -> bool:
        """True once the host has closed this connection (skipping what it sent before)."""
        try:
            while await self.recv() is not None:
                pass
        except ConnectionError:  # closed with our unread bytes still queued: a reset
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def keep_answering(guest: RawGuest) -> None:
    with contextlib.suppress(OSError, EOFError):
        while (msg := await guest.recv(timeout=60)) is not None:
            if msg["type"] == "challenge-request":
                await guest.answer(msg)


@contextlib.asynccontextmanager
async def answering(host: Host, vm: str) -> AsyncIterator[RawGuest]:
    """A registered guest that answers every challenge until the block ends."""
    guest = await RawGuest.connect(host.sock(vm))
    await guest.register(vm)
    task = asyncio.create_task(keep_answering(guest))
    try:
        yield guest
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await guest.close()


async def intervals_pass(host: Host, n: int) -> None:
    """Let `n` more challenges be answered: a clock made of the protocol's own beats."""
    target = host.count("responses") + n
    await eventually(lambda: host.count("responses") >= target, what=f"{n} more responses")


@contextlib.asynccontextmanager
async def registered_agent(agent: GuestAgent) -> AsyncIterator[GuestAgent]:
    """An in-process agent, running and registered with its host, until the block ends."""
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.registered.wait(), 10)
        yield agent
    finally:
        await agent.stop()
        await asyncio.wait_for(task, 10)


def of_type(ups: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The up messages of one type, in order."""
    return [m for m in ups if m["type"] == kind]
