"""The guest agent: as real processes against the supervisor, and in-process on TCP and
on a character device (a pseudo-terminal standing in for a serial port)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from opendoctor.heartbeat.agent import GuestAgent, command_health
from opendoctor.heartbeat.cli import main
from opendoctor.wire import heartbeat as p
from tests.conftest import eventually

from .conftest import Agents, Host, answering, intervals_pass


async def registered(host: Host, vm: str) -> None:
    await eventually(lambda: host.sup.state(vm) == "ok", what=f"{vm} registered")


async def test_hung_agent_is_missed_and_recovers(host: Host, agents: Agents) -> None:
    await host.add("vm1", "vm2")
    proc = await agents.start(host.sock("vm1"), "vm1")
    await agents.start(host.sock("vm2"), "vm2")
    await registered(host, "vm1")
    await registered(host, "vm2")
    await intervals_pass(host, 4)
    assert host.reports == []

    proc.send_signal(signal.SIGSTOP)
    await eventually(lambda: host.of("vm1") == [("missed", "down")], what="missed")
    assert host.sup.state("vm1") == "missed"
    proc.send_signal(signal.SIGCONT)
    await eventually(lambda: host.of("vm1") == [("missed", "down"), ("missed", "up")], what="up")
    assert host.of("vm2") == []


async def test_failing_health_command_is_unhealthy_then_up(
    host: Host, agents: Agents, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    check = f"if [ -e {flag} ]; then echo 'db: connection refused' >&2; exit 3; fi"
    await host.add("vm1")
    await agents.start(host.sock("vm1"), "vm1", "--health-cmd", check)
    await registered(host, "vm1")
    flag.touch()
    await eventually(lambda: host.of("vm1") == [("unhealthy", "down")], what="unhealthy")
    reason = host.reports[0]["details"]["reason"]
    assert "exit code 3" in reason and "db: connection refused" in reason
    flag.unlink()
    await eventually(
        lambda: host.of("vm1") == [("unhealthy", "down"), ("unhealthy", "up")], what="up"
    )


async def test_restarted_agent_reregisters_without_a_report(
    make_host: Callable[..., Host], agents: Agents
) -> None:
    # A generous grace keeps this about behaviour, not about how fast Python starts;
    # `detection()` measures restarts under the default grace.
    host = make_host(reconnect_grace=0.5)
    await host.add("vm1", "vm2")
    old = await agents.start(host.sock("vm1"), "vm1", "--health-cmd", "true")
    await agents.start(host.sock("vm2"), "vm2")
    await registered(host, "vm1")
    old.kill()
    await old.wait()
    await agents.start(host.sock("vm1"), "vm1", "--health-cmd", "true")
    await eventually(lambda: host.count("reinit") == 1, what="re-registration")
    await intervals_pass(host, 16)  # both VMs, past the grace
    assert host.reports == []
    assert host.sup.state("vm1") == "ok"


async def test_sigterm_sends_exit_so_stopping_is_no_fault(host: Host, agents: Agents) -> None:
    await host.add("vm1", "clock")
    async with answering(host, "clock"):
        proc = await agents.start(host.sock("vm1"), "vm1")
        await registered(host, "vm1")
        proc.terminate()
        assert await proc.wait() == 0
        await eventually(lambda: host.sup.state("vm1") == "waiting", what="exit seen")
        await intervals_pass(host, 5)
        assert host.reports == []


async def test_ready_file_is_written_once_registered(
    host: Host, agents: Agents, tmp_path: Path
) -> None:
    ready = tmp_path / "vm1.ready"
    await host.add("vm1")
    await agents.start(host.sock("vm1"), "vm1", "--ready-file", str(ready))
    await eventually(ready.exists, what="ready file")
    assert ready.read_text() == "vm1\n"
    assert host.sup.state("vm1") == "ok"


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--channel", "/nowhere"])
    with pytest.raises(SystemExit):
        main(["--channel", "/nowhere", "--instance-id", "x", "--interval-ms", "-5"])
    assert "instance-id" in capsys.readouterr().err


# ---- in-process agents ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(agent: GuestAgent) -> AsyncIterator[GuestAgent]:
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        await agent.stop()
        await asyncio.wait_for(task, 5)


async def test_a_hanging_health_check_counts_as_unhealthy(host: Host) -> None:
    calls = 0

    async def check() -> tuple[bool, str | None]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.Event().wait()  # hangs for good
        return True, None

    await host.add("vm1")
    agent = GuestAgent(host.sock("vm1"), "vm1", check, health_timeout=0.2)
    async with running(agent):
        await eventually(lambda: host.of("vm1") == [("unhealthy", "down")], what="unhealthy")
        assert "did not finish within 0.2 s" in host.reports[0]["details"]["reason"]


async def test_a_slow_health_check_never_makes_an_answer_late(host: Host) -> None:
    async def slow() -> tuple[bool, str | None]:
        await asyncio.sleep(0.3)  # the check's own work, 3 heartbeat intervals long
        return True, None

    await host.add("vm1")
    async with running(GuestAgent(host.sock("vm1"), "vm1", slow, health_timeout=2.0)) as agent:
        await eventually(agent.registered.is_set, what="registered")
        await intervals_pass(host, 10)
        assert agent.answered >= 10
        assert host.reports == []


async def test_agent_comes_back_after_the_host_end_restarts(host: Host) -> None:
    await host.add("vm1")
    agent = GuestAgent(host.sock("vm1"), "vm1", backoff_max=0.1)
    async with running(agent):
        await registered(host, "vm1")
        await host.sup.remove_vm("vm1")
        await host.add("vm1")
        await registered(host, "vm1")
    assert host.reports == []


async def test_command_health_reports_exit_codes_stderr_and_timeouts(tmp_path: Path) -> None:
    assert await command_health("true")() == (True, None)
    healthy, reason = await command_health("echo; echo ' disk full ' >&2; exit 4")()
    assert not healthy and reason == "health command failed (exit code 4): disk full"
    pidfile = tmp_path / "pid"
    healthy, reason = await command_health(f"sleep 30 & echo $! > {pidfile}; wait", 0.3)()
    assert not healthy and reason == "health command timed out after 0.3 s"
    pid = int(pidfile.read_text())

    def gone() -> bool:  # killed with its shell, and reaped (or a zombie on its way out)
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    await eventually(gone, what="the command's children killed")


class ScriptedHost:
    """The host end written by hand over any stream: what a third-party host would see."""

    def __init__(self, reader: asyncio.StreamReader, write: Callable[[bytes], Any]) -> None:
        self.lines = p.LineReader(reader)
        self.write = write

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.lines.readline(), 5)
        assert line is not None
        group, body = p.decode(line)
        assert group == p.GROUP_HEARTBEAT
        return body

    async def session(self, agent: GuestAgent) -> None:
        init = await self.recv()
        assert init["type"] == "init" and init["instance_id"] == agent.instance_id
        assert init["health_check"] is False
        self.write(
            p.encode(
                p.GROUP_HEARTBEAT,
                {
                    "type": "init-ack",
                    "instance_id": init["instance_id"],
                    "heartbeat_interval_ms": 250,
                    "response_timeout_ms": 200,
                },
            )
        )
        self.write(p.encode("other-service", {"hello": "ignored"}))
        self.write(b"garbage\n")
        self.write(
            p.encode(
                p.GROUP_HEARTBEAT, {"type": "challenge-request", "seq": 1, "challenge": "c0ffee"}
            )
        )
        response = await self.recv()
        assert response == {
            "type": "challenge-response",
            "seq": 1,
            "challenge": "c0ffee",
            "healthy": True,
            "reason": None,
        }
        await eventually(agent.registered.is_set, what="agent registered")
        assert agent.negotiated == (250, 200)
        await agent.stop("test over")
        assert await self.recv() == {"type": "exit", "reason": "test over"}


async def test_agent_over_tcp() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    agent_box: list[GuestAgent] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await ScriptedHost(reader, writer.write).session(agent_box[0])
            done.set_result(None)
        except BaseException as exc:  # hand the failure to the test body
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = GuestAgent(f"tcp:127.0.0.1:{port}", "vm-tcp")
    agent_box.append(agent)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(done, 10)
        await asyncio.wait_for(task, 5)
    finally:
        server.close()


async def test_agent_over_a_character_device() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", buffering=0)
    )
    agent = GuestAgent(path, "vm-serial")
    task = asyncio.create_task(agent.run())
    try:
        await ScriptedHost(reader, lambda data: os.write(master, data)).session(agent)
        await asyncio.wait_for(task, 5)
    finally:
        transport.close()
        os.close(master)
        os.close(slave)


async def test_the_minimal_agent_in_the_docs_works(
    host: Host, agents: Agents, tmp_path: Path
) -> None:
    doc = (Path(__file__).parents[3] / "docs" / "guest-heartbeat.md").read_text()
    script = tmp_path / "mini_agent.py"
    script.write_text(doc.split("```python\n", 1)[1].split("```", 1)[0])
    await host.add("vm1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), host.sock("vm1"), "vm1"
    )
    agents.procs.append(proc)
    await registered(host, "vm1")
    await intervals_pass(host, 5)
    assert host.reports == []
