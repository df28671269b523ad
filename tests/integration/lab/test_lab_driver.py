"""The `lab` VIM driver passes every `VimDriver` call through to the lab."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from opendoctor.controller import lab as lab_driver
from opendoctor.controller.lab import LabDriver
from opendoctor.core.model import Host, Server, VimChange
from opendoctor.core.ports import VimDriver, VimError
from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.client import LabError
from opendoctor.lab.runner import LabRunner

from .helpers import served_by

IP_PREFIX = "127.213"


async def test_driver_passes_every_call_through(lab: LabRunner, http: HttpClient) -> None:
    driver = LabDriver.from_state_dir(lab.state_dir)
    try:
        assert isinstance(driver, VimDriver)
        hosts = await driver.list_hosts()
        assert all(isinstance(h, Host) for h in hosts)
        assert [h.name for h in hosts] == ["compute1", "compute2", "compute3"]
        servers = await driver.list_servers()
        assert all(isinstance(s, Server) for s in servers) and len(servers) == 6
        vm = servers[0]

        await driver.set_host_enabled("compute3", False)
        assert (await lab.client.host("compute3")).enabled is False
        await driver.set_host_enabled("compute3", True)

        await driver.stop(vm.id)
        assert (await lab.client.server(vm.id)).status == "SHUTOFF"
        await driver.start(vm.id)
        assert (await lab.client.server(vm.id)).status == "ACTIVE"

        live = await driver.live_migrate(vm.id, "compute3")
        assert (live.host, live.status) == ("compute3", "ACTIVE")
        migrated = await driver.migrate(vm.id, "compute2")
        assert migrated.host == "compute2"
        assert vm.endpoint is not None
        assert await served_by(http, vm.endpoint) == f"Served by {vm.name}\n"

        await driver.reset_state(vm.id, "error")
        assert (await lab.client.server(vm.id)).status == "ERROR"

        await lab.client.fail_host("compute2")
        await driver.force_down("compute2", True)
        assert (await lab.client.host("compute2")).state == "down"
        evacuated = await driver.evacuate(vm.id, "compute1")
        assert (evacuated.host, evacuated.status) == ("compute1", "ACTIVE")
        assert await served_by(http, vm.endpoint) == f"Served by {vm.name}\n"
        await driver.force_down("compute2", False)
        assert (await lab.client.host("compute2")).state == "up"

        # Many servers in one call (the lab client splits more than a request holds):
        # each known one set, each unknown one named with the lab's reason.
        others = [s.id for s in servers[1:3]]
        unknown = [f"no-such-server-{i}" for i in range(1001)]
        refused = await driver.reset_states([*unknown[:500], *others, *unknown[500:]], "error")
        assert set(refused) == set(unknown)
        assert all("no-such-server" in why for why in refused.values())
        assert {(await lab.client.server(s)).status for s in others} == {"ERROR"}
        assert await driver.reset_states(others, "active") == {}
        assert {(await lab.client.server(s)).status for s in others} == {"ACTIVE"}
        with pytest.raises(VimError) as wrong:
            await driver.reset_states(others, "paused")
        assert wrong.value.status == 400
        assert {(await lab.client.server(s)).status for s in others} == {"ACTIVE"}

        # The driver speaks the protocol's error, whatever the lab client raised.
        with pytest.raises(VimError) as refusal:
            await driver.reset_state("no-such-server", "error")
        assert refusal.value.status == 404
        assert isinstance(refusal.value.__cause__, LabError)
    finally:
        await driver.close()


async def test_driver_change_feed(lab: LabRunner) -> None:
    driver = LabDriver(lab.url, poll_wait=5)
    feed = driver.changes()
    try:
        vm = (await driver.list_servers())[0]
        assert (await _started(driver, feed)).kind == "host"

        await driver.force_down("compute1", True)
        await driver.reset_state(vm.id, "error")
        seen = await asyncio.wait_for(_until_server_change(feed), 10)
        forced = [c.host for c in seen if c.kind == "host" and c.host and c.host.name == "compute1"]
        assert forced and forced[-1] is not None and forced[-1].forced_down is True
        assert seen[-1].server is not None
        assert (seen[-1].server.id, seen[-1].server.status) == (vm.id, "ERROR")
    finally:
        with contextlib.suppress(Exception):
            await feed.aclose()  # type: ignore[attr-defined]
        await driver.close()


async def test_driver_feed_reads_a_burst_in_bounded_polls_in_order(
    lab: LabRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab_driver, "FEED_BATCH", 2)
    driver = LabDriver(lab.url, poll_wait=5)
    feed = driver.changes()
    try:
        ids = [s.id for s in await driver.list_servers()]
        await _started(driver, feed)
        # Every server in error, then back, in two requests: twelve changes that the
        # feed reads two at a time, each once and in the lab's order.
        assert await driver.reset_states(ids, "error") == {}
        assert await driver.reset_states(ids, "active") == {}
        seen: list[tuple[str, str]] = []

        async def read() -> None:
            async for change in feed:
                if change.server is not None:
                    seen.append((change.server.id, change.server.status))
                if len(seen) == 2 * len(ids):
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), 10)
        assert seen == [(i, "ERROR") for i in ids] + [(i, "ACTIVE") for i in ids]
    finally:
        with contextlib.suppress(Exception):
            await feed.aclose()  # type: ignore[attr-defined]
        await driver.close()


async def _started(driver: LabDriver, feed: AsyncIterator[VimChange]) -> VimChange:
    """The feed starts from the moment iteration starts, which the test cannot see: keep
    making changes until one comes through (the order is checked from there)."""
    first = asyncio.ensure_future(anext(feed))
    enabled = True
    while not first.done():
        enabled = not enabled
        await driver.set_host_enabled("compute3", enabled)
        await asyncio.wait({first}, timeout=0.1)
    return first.result()


async def _until_server_change(feed: AsyncIterator[VimChange]) -> list[VimChange]:
    seen = []
    async for change in feed:
        seen.append(change)
        if change.kind == "server":
            return seen
    return seen


async def test_driver_feed_survives_an_unreachable_lab() -> None:
    # Nothing listens on port 9 of this address: every poll fails, the feed keeps trying.
    driver = LabDriver(f"http://{IP_PREFIX}.9.9:9", backoff_initial=0.01, backoff_max=0.05)
    feed = driver.changes()
    pending = asyncio.ensure_future(anext(feed))
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done  # still retrying, not crashed
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await driver.close()
