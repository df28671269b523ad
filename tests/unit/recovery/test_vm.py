"""VM recovery over the memory VIM: a failed server is restarted in place, moved if
restarts do not bring it back, and its owner hears of every outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.faults import Fault
from opendoctor.core.model import PROCESS_EXITED, Host, Server
from opendoctor.core.ports import VimError
from opendoctor.core.recovery_settings import VmRecoverySettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.recovery.vm import RECOVERY_EVENT, VmRecovery
from tests.tcpproxy import free_port
from tests.unit.recovery.support import Told


class HostBound(MemoryVim):
    """A VIM whose `broken` host cannot start servers (a bad image cache, say): a
    server there starts only once it has moved elsewhere."""

    def __init__(self, hosts: list[Host], servers: list[Server], broken: str = "") -> None:
        super().__init__(hosts, servers)
        self.broken = broken

    async def start(self, server_id: str) -> None:
        if self.servers[server_id].host == self.broken:
            self.calls.append(("start", server_id))
            raise VimError(f"cannot start on {self.broken}", 500)
        await super().start(server_id)


def two_hosts(down: bool = False) -> list[Host]:
    return [
        Host("compute1", "127.0.1.1", forced_down=down, state="down" if down else "up"),
        Host("compute2", "127.0.1.2"),
    ]


def victim(endpoint: str | None = None) -> Server:
    return Server("vm1", "vm1", "compute1", "project-a", "ERROR", endpoint=endpoint)


def fault_of(server: Server) -> Fault:
    return Fault("f1", PROCESS_EXITED, server.host, 0.0, instance_id=server.id)


async def run(
    vim: MemoryVim, server: Server, told: Told | None = None, fault: Fault | None = None, **kw: Any
) -> Fault:
    fault = fault or fault_of(server)
    http = HttpClient()
    try:
        settings = VmRecoverySettings(**{"serve_timeout": 2.0, **kw})
        await VmRecovery(vim, http, settings, told)(fault, server)
    finally:
        await http.close()
    return fault


def outcomes(told: Told) -> list[tuple[Any, ...]]:
    """(action, result, attempt, host) of each outcome told, in order."""
    assert all(e.event_type == RECOVERY_EVENT for e in told.events)
    return [
        tuple(e.traits[n].value for n in ("action", "result", "attempt", "host"))
        for e in told.events
    ]


async def test_a_failed_server_is_restarted_in_place_and_its_owner_told() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    told = Told()
    fault = await run(vim, server, told)
    assert [c for c in vim.calls if c[0] in ("stop", "start")] == [
        ("stop", "vm1"),
        ("start", "vm1"),
    ]
    assert vim.servers["vm1"].status == "ACTIVE"
    [item] = fault.recovery
    assert (item.action, item.result, item.attempts, item.to_host) == (
        "restart",
        "ok",
        1,
        "compute1",
    )
    assert item.requested and item.started and item.serving and item.finished
    [event] = told.events
    traits = {name: t.value for name, t in event.traits.items()}
    assert traits == {
        "instance_id": "vm1",
        "project_id": "project-a",
        "tenant_id": "project-a",
        "host": "compute1",
        "action": "restart",
        "result": "ok",
        "attempt": 1,
        "reason": "restarted in place; serving again",
    }
    assert event.fault_id == fault.id


async def test_a_server_that_will_not_restart_is_moved_to_another_host() -> None:
    server = victim()
    vim = HostBound(two_hosts(), [server], broken="compute1")
    told = Told()
    fault = await run(vim, server, told, attempts=2)
    assert outcomes(told) == [
        ("restart", "failed", 1, "compute1"),
        ("restart", "failed", 2, "compute1"),
        ("migrate", "ok", 3, "compute2"),
    ]
    [item] = fault.recovery
    assert (item.action, item.result, item.attempts) == ("migrate", "ok", 3)
    assert (item.from_host, item.to_host) == ("compute1", "compute2")
    # It arrived stopped (its starts had failed): it was started where it went.
    assert vim.servers["vm1"].host == "compute2" and vim.servers["vm1"].status == "ACTIVE"
    assert told.events[0].traits["reason"].value == "cannot start on compute1"


async def test_a_server_nothing_brings_back_fails_and_is_in_error_again() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    vim.fail = {"start", "migrate"}
    told = Told()
    fault = await run(vim, server, told, attempts=3)
    assert [o[:3] for o in outcomes(told)] == [
        ("restart", "failed", 1),
        ("restart", "failed", 2),
        ("restart", "failed", 3),
        ("migrate", "failed", 4),
    ]
    [item] = fault.recovery
    assert (item.result, item.attempts) == ("failed", 4)
    assert item.error is not None and "restart 3: start failed" in item.error
    assert "migrate: migrate failed" in item.error
    assert vim.servers["vm1"].status == "ERROR"  # as the rules left it, while at fault


async def test_without_migration_only_restarts_are_tried() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    vim.fail = {"start"}
    fault = await run(vim, server, attempts=1, migrate=False)
    assert not any(c[0] == "migrate" for c in vim.calls)
    assert (fault.recovery[0].result, fault.recovery[0].attempts) == ("failed", 1)


async def test_a_server_that_came_back_by_itself_is_not_restarted() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    fault = fault_of(server)
    fault.status = "cleared"
    told = Told()
    await run(vim, server, told, fault=fault)
    assert not any(c[0] in ("stop", "start") for c in vim.calls)
    [item] = fault.recovery
    assert item.result == "cancelled" and "came back by itself" in str(item.error)
    assert told.events == []


async def test_a_server_of_a_host_that_is_down_is_left_to_host_recovery() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(down=True), [server])
    fault = await run(vim, server)
    assert not any(c[0] in ("stop", "start", "migrate") for c in vim.calls)
    assert fault.recovery[0].result == "cancelled"
    assert "host compute1 is down" in str(fault.recovery[0].error)


async def test_a_server_is_recovered_once_per_fault() -> None:
    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    fault = await run(vim, server)
    await run(vim, server, fault=fault)  # the fault handed over again (escalated)
    assert [c[0] for c in vim.calls].count("start") == 1
    assert len(fault.recovery) == 1


async def test_an_owner_whose_notifier_fails_does_not_stop_the_recovery() -> None:
    class Broken(Told):
        async def notify_many(self, batches: Any) -> Any:
            raise RuntimeError("the notifier is down")

    server = victim()
    vim = MemoryVim(two_hosts(), [server])
    fault = await run(vim, server, Broken())
    assert fault.recovery[0].result == "ok"


async def test_restarts_and_moves_are_bounded_in_number_at_once() -> None:
    gate = asyncio.Event()
    running, most = 0, 0

    class Slow(MemoryVim):
        async def start(self, server_id: str) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1
            await super().start(server_id)

    servers = [Server(f"vm{i}", f"vm{i}", "compute1", "project-a", "ERROR") for i in range(6)]
    vim = Slow(two_hosts(), servers)
    http = HttpClient()
    recovery = VmRecovery(vim, http, VmRecoverySettings(concurrency=2))
    faults = [Fault(f"f{s.id}", PROCESS_EXITED, s.host, 0.0, instance_id=s.id) for s in servers]
    tasks = [asyncio.create_task(recovery(f, s)) for f, s in zip(faults, servers, strict=True)]
    try:
        while running < 2:
            await asyncio.sleep(0)
        for _ in range(20):  # the others had their chance to start, and did not
            await asyncio.sleep(0)
        assert running == 2
        gate.set()
        await asyncio.gather(*tasks)
    finally:
        await http.close()
    assert most == 2
    assert all(f.recovery[0].result == "ok" for f in faults)


@pytest.fixture
async def app() -> AsyncIterator[dict[str, Any]]:
    """A server's application: 503 until its server (`app["vim"]`'s vm1) runs on
    compute2, then 200; `app["url"]` is its endpoint, `app["asked"]` the asks."""
    app: dict[str, Any] = {"asked": 0}

    async def answer(_: web.Request) -> web.Response:
        app["asked"] += 1
        return web.Response(status=200 if app["vim"].servers["vm1"].host == "compute2" else 503)

    web_app = web.Application()
    web_app.router.add_get("/", answer)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    app["url"] = f"http://127.0.0.1:{port}/"
    try:
        yield app
    finally:
        await runner.cleanup()


async def test_a_restart_counts_only_once_the_server_serves_again(app: dict[str, Any]) -> None:
    server = victim(app["url"])
    vim = app["vim"] = MemoryVim(two_hosts(), [server])
    told = Told()
    fault = await run(vim, server, told, attempts=1, serve_timeout=0.3)
    # Restarted, it ran but never answered 200 where it was; moved, it did.
    assert [o[:2] for o in outcomes(told)] == [("restart", "failed"), ("migrate", "ok")]
    assert "did not serve within 0.3s" in told.events[0].traits["reason"].value
    [item] = fault.recovery
    assert (item.action, item.result, item.to_host) == ("migrate", "ok", "compute2")
    assert item.serving is not None and app["asked"] > 1
