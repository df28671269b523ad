"""Fixtures for the lab tests: real lab managers, hosts and VMs on loopback addresses.

Each test module sets `IP_PREFIX` (a loopback 127.N prefix of its own), so that
modules never share addresses, and every lab is checked to leave no process behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab import runner as lab_runner
from opendoctor.lab.runner import LabRunner
from opendoctor.lab.spec import LabSpec

from .helpers import processes_matching
from .linkserver import LinkServer
from .sink import EventSink

LabFactory = Callable[..., Awaitable[LabRunner]]


async def assert_no_lab_processes(prefix: str, timeout: float = 10.0) -> None:
    # Killed processes vanish a moment after the signal; poll until they have.
    deadline = time.monotonic() + timeout
    while left := processes_matching(f" {prefix}.") + processes_matching(f"-prefix {prefix} "):
        if time.monotonic() >= deadline:
            raise AssertionError("processes left behind:\n" + "\n".join(left))
        await asyncio.sleep(0.05)


@pytest.fixture
def ip_prefix(request: pytest.FixtureRequest) -> str:
    prefix = getattr(request.module, "IP_PREFIX", None)
    assert isinstance(prefix, str), "lab test modules set IP_PREFIX = '127.N'"
    return prefix


@pytest.fixture
async def lab_factory(tmp_path: Path, ip_prefix: str) -> AsyncIterator[LabFactory]:
    runners: list[LabRunner] = []

    async def make(**spec: Any) -> LabRunner:
        runner = LabRunner(LabSpec(ip_prefix=ip_prefix, **spec), tmp_path / f"lab{len(runners)}")
        runners.append(runner)
        await runner.start()
        return runner

    try:
        yield make
    finally:
        for runner in runners:
            await runner.stop()
        await assert_no_lab_processes(ip_prefix)


@pytest.fixture
async def lab(lab_factory: LabFactory) -> LabRunner:
    return await lab_factory()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(timeout=5.0)
    yield client
    await client.close()


@pytest.fixture
async def sink() -> AsyncIterator[EventSink]:
    """A real HTTP events sink, as opendoctor's events API would be."""
    sink = EventSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def link() -> AsyncIterator[LinkServer]:
    """A stand-in for the service end of the host link (and the events sink)."""
    server = LinkServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """`opendoctor lab ...` with a state dir of the test's own; its lab stopped after."""
    directory = tmp_path / "lab"
    monkeypatch.setenv("OPENDOCTOR_LAB_DIR", str(directory))
    monkeypatch.setenv("COLUMNS", "200")  # wide tables: ids are not folded
    try:
        yield CliRunner()
    finally:
        lab_runner.stop(directory)
