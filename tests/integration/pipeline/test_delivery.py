"""Notifications survive consumers that are down and restarts of opendoctor itself."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from opendoctor.app.service import Service
from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Server
from opendoctor.core.notifications import DELIVERED, FAILED, PENDING
from opendoctor.tools.consumer import make_app
from tests.conftest import eventually
from tests.integration.pipeline.conftest import (
    ADMIN,
    Consumer,
    Running,
    alarm_for,
    as_project,
    free_port,
    host_down,
    lab_vim,
    serving,
    settings_for,
)


def start(
    tmp_path: Path, db_url: str, vim: MemoryVim | None = None, **kw: Any
) -> AbstractAsyncContextManager[Running]:
    """The service on `db_url`, as `serving` runs it, with these settings."""
    return serving(settings_for(tmp_path, database_url=db_url, **kw), vim or lab_vim())


async def listening(app: web.Application) -> Consumer:
    """A consumer app on a port of its own, started."""
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", app)
    await consumer.start(port)
    return consumer


async def refusing_consumer(seen: list[str | None]) -> Consumer:
    """A consumer whose `/failure` answers 404 for good; `seen` gets each call's
    Authorization header."""

    async def gone(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"error": "no such subscription"}, status=404)

    app = web.Application()
    app.router.add_post("/failure", gone)
    return await listening(app)


async def subscribe(client: httpx.AsyncClient, server: Server, url: str) -> None:
    """The server's owner registers an alarm for it with this action."""
    resp = await client.post(
        "/v2/alarms", json=alarm_for(server.id, url), headers=as_project(server.project_id)
    )
    assert resp.status_code == 201, resp.text


async def subscribe_host(service: Service, client: httpx.AsyncClient, host: str, url: str) -> int:
    servers = [s for s in service.topology.servers.values() if s.host == host]
    for server in servers:
        await subscribe(client, server, url)
    return len(servers)


async def test_a_consumer_that_is_down_gets_its_backlog_when_it_returns(
    tmp_path: Path, db_url: str
) -> None:
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    try:
        async with start(tmp_path, db_url) as r:
            service, client = r.service, r.client
            n = await subscribe_host(service, client, "compute1", consumer.url + "/failure")
            await client.put("/events", json=[host_down("compute1")])
            await service.bus.drain()
            pending = await eventually(
                lambda: service.outbox.list(status=PENDING), what="entries waiting for a retry"
            )
            assert len(pending) == n and all(e.attempts >= 1 for e in pending)
            assert all("refused" in (e.last_error or "").lower() for e in pending)

            await consumer.start(port)
            await eventually(lambda: len(consumer.received) == n, what="the backlog")
            delivered = await eventually(lambda: service.outbox.list(status=DELIVERED))
            assert len(delivered) == n
    finally:
        await consumer.stop()


async def test_a_restart_loses_no_notification(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    consumer = Consumer(f"http://127.0.0.1:{port}", make_app(quiet=True))
    vim = lab_vim()
    async with start(tmp_path, db_url, vim) as first:
        service, client = first.service, first.client
        n = await subscribe_host(service, client, "compute2", consumer.url + "/failure")
        await client.put("/events", json=[host_down("compute2")])
        await eventually(lambda: service.outbox.list(status=PENDING), what="pending entries")
        # The fault is stored just after the first attempts: on a server database that can
        # be a few milliseconds later (stopping before would replay the event at the restart).
        await eventually(lambda: service.faults.list(status="active"), what="the fault stored")

    # A new process over the same database: alarms, the active fault and the
    # undelivered notifications are all still there.
    await consumer.start(port)
    try:
        async with start(tmp_path, db_url, vim) as r:
            service, client = r.service, r.client
            assert len(service.index) == n
            assert ("host", "compute2") in service.inspector.active
            await eventually(lambda: len(consumer.received) == n, what="delivery after restart")
            # The fault is still active: a repeated report after the restart is deduplicated.
            await client.put("/events", json=[host_down("compute2")])
            await service.bus.drain()
            assert len(consumer.received) == n
    finally:
        await consumer.stop()


async def test_a_consumer_that_refuses_for_good_is_not_retried_forever(
    tmp_path: Path, db_url: str
) -> None:
    refusing = await refusing_consumer([])
    try:
        async with start(tmp_path, db_url) as r:
            service, client = r.service, r.client
            await subscribe_host(service, client, "compute3", refusing.url + "/failure")
            await client.put("/events", json=[host_down("compute3")])
            failed = await eventually(lambda: service.outbox.list(status=FAILED), what="failed")
            assert len(failed) == 2
            assert all(e.attempts == 1 and "HTTP 404" in (e.last_error or "") for e in failed)
    finally:
        await refusing.stop()


@pytest.mark.parametrize("slow_alarms", [1, 3])
async def test_a_slow_consumer_does_not_hold_back_the_others(
    tmp_path: Path, db_url: str, slow_alarms: int
) -> None:
    """Deliveries run concurrently: one consumer that never answers costs the others
    nothing, even when it holds more callbacks than there are connections (each
    consumer gets a share of them)."""
    hang, held = asyncio.Event(), []
    slow = await hanging_consumer(hang, held)
    fast = await listening(make_app(quiet=True))
    notifier = {"timeout": 5.0, "backoff_initial": 0.05, "connections": 2, "per_destination": 1}
    try:
        async with start(tmp_path, db_url, notifier=notifier) as r:
            service, client = r.service, r.client
            servers = service.topology.servers.values()
            on_1 = next(s for s in servers if s.host == "compute1")
            on_2 = next(s for s in servers if s.host == "compute2")
            subscriptions = [(on_1, slow.url)] * slow_alarms + [(on_2, fast.url)]
            for server, url in subscriptions:
                await subscribe(client, server, url + "/failure")
            # The slow consumer holds every connection its share allows...
            await client.put("/events", json=[host_down("compute1")])
            await eventually(lambda: len(held) == 1, what="the slow consumer holding a callback")
            # ... and the next fault's owner is told all the same.
            await client.put("/events", json=[host_down("compute2")])
            await eventually(lambda: len(fast.received) == 1, timeout=2.0, what="the fast consumer")
            assert len(held) == 1  # the rest of its callbacks wait for its share, not for others
    finally:
        hang.set()
        await slow.stop()
        await fast.stop()


async def test_an_actions_credentials_are_not_shown(tmp_path: Path, db_url: str) -> None:
    """A consumer's password and token in its action URL reach the consumer, and not
    the notifications list nor the error an operator reads."""
    seen: list[str | None] = []
    consumer = await refusing_consumer(seen)
    url = consumer.url.replace("http://", "http://vnfm:s3cr3t@") + "/failure?token=s3cr3t"
    try:
        async with start(tmp_path, db_url) as r:
            service, client = r.service, r.client
            await subscribe_host(service, client, "compute3", url)
            await client.put("/events", json=[host_down("compute3")])
            await eventually(lambda: service.outbox.list(status=FAILED), what="refused")
            assert len(seen) == 2 and all(a is not None and a.startswith("Basic ") for a in seen)
            listed = await client.get("/v1/notifications", headers=ADMIN)
            text = listed.text
            assert listed.status_code == 200 and "s3cr3t" not in text
            assert "vnfm:***@127.0.0.1" in text and "HTTP 404" in text
    finally:
        await consumer.stop()


async def test_callbacks_are_signed_with_their_projects_key(tmp_path: Path, db_url: str) -> None:
    """project-a has a signing key: a consumer that checks with it takes project-a's
    callbacks (it records only those whose signature holds); one with another key
    refuses them, and the notification fails for good."""
    keys = {"project-a": "a-key"}
    checking, wrong = free_port(), free_port()
    signed = Consumer(f"http://127.0.0.1:{checking}", make_app(True, None, b"a-key"))
    refusing = Consumer(f"http://127.0.0.1:{wrong}", make_app(True, None, b"not-a-key"))
    await signed.start(checking)
    await refusing.start(wrong)
    try:
        async with start(tmp_path, db_url, notifier={"signing_keys": keys}) as r:
            service, client = r.service, r.client
            victims = [s for s in service.topology.servers.values() if s.host == "compute1"]
            a = next(s for s in victims if s.project_id == "project-a")
            for url in (signed.url, refusing.url):
                await subscribe(client, a, url + "/failure")
            await client.put("/events", json=[host_down("compute1")])
            await eventually(lambda: len(signed.received) == 1, what="the signed callback taken")
            refused = await eventually(lambda: service.outbox.list(status=FAILED), what="refused")
            assert [e.url for e in refused] == [refusing.url + "/failure"]
            assert "HTTP 401" in (refused[0].last_error or "")
    finally:
        await signed.stop()
        await refusing.stop()


async def hanging_consumer(hang: asyncio.Event, held: list[str]) -> Consumer:
    """A consumer that takes each callback and answers only once `hang` is set."""

    async def stuck(request: web.Request) -> web.Response:
        held.append(request.path)
        await hang.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/failure", stuck)
    return await listening(app)


async def test_a_tenant_whose_consumer_never_answers_holds_nobody_else_up(
    tmp_path: Path, db_url: str
) -> None:
    hang, held = asyncio.Event(), []
    slow = await hanging_consumer(hang, held)
    fast = await listening(make_app(quiet=True))
    notifier = {"timeout": 5.0, "first_attempt_wait": 0.3, "backoff_initial": 0.05}
    try:
        async with start(tmp_path, db_url, notifier=notifier, recovery={"enabled": False}) as r:
            service, client = r.service, r.client
            on_host = [s for s in service.topology.servers.values() if s.host == "compute1"]
            theirs = next(s for s in on_host if s.project_id == "project-a")
            ours = next(s for s in on_host if s.project_id == "project-b")
            await subscribe(client, theirs, slow.url + "/failure")
            await subscribe(client, ours, fast.url + "/failure")
            await client.put("/events", json=[host_down("compute1")])

            # The other tenant hears, and both servers go to error, long before the silent
            # consumer's 5 s are up.
            await eventually(lambda: len(fast.received) == 1, timeout=2.5, what="the other owner")
            for server in on_host:
                await eventually(
                    lambda s=server: ("reset_state", s.id, "error") in service.vim.calls,  # type: ignore[attr-defined]
                    timeout=2.5,
                    what=f"{server.name} set to error",
                )
            assert held == ["/failure"]

            # The silent consumer's callback is kept meanwhile, its first attempt running.
            async def entry_for(server_id: str) -> dict[str, Any]:
                listed = (await client.get("/v1/notifications", headers=ADMIN)).json()
                return next(n for n in listed if n["instance_id"] == server_id)

            kept = await eventually(lambda: entry_for(theirs.id), what="the late entry stored")
            assert (kept["status"], kept["attempts"]) == (PENDING, 1)

            # It answers at last: delivered once, and the fault's T09 is that answer.
            hang.set()

            async def delivered() -> dict[str, Any] | None:
                entry = await entry_for(theirs.id)
                return entry if entry["status"] == DELIVERED else None

            late = await eventually(delivered, what="the late answer recorded")
            assert late["attempts"] == 1 and held == ["/failure"]
            fault_id = service.inspector.active[("host", "compute1")].id

            async def t09() -> float | None:
                body = (await client.get(f"/v1/faults/{fault_id}", headers=ADMIN)).json()
                at = body["trace"].get("T09")
                return at if at is not None and at >= late["delivered"] else None

            assert await eventually(t09, what="T09 moved to the late answer") == late["delivered"]
    finally:
        hang.set()
        await slow.stop()
        await fast.stop()


async def test_one_tenants_many_silent_consumers_take_only_its_share(
    tmp_path: Path, db_url: str
) -> None:
    hang, held = asyncio.Event(), []
    silent = [await hanging_consumer(hang, held) for _ in range(3)]
    fast = await listening(make_app(quiet=True))
    notifier = {
        "timeout": 5.0,
        "connections": 3,
        "per_destination": 1,
        "per_project": 2,
        "first_attempt_wait": 0.2,
    }
    try:
        async with start(tmp_path, db_url, notifier=notifier) as r:
            service, client = r.service, r.client
            servers = service.topology.servers.values()
            theirs = next(
                s for s in servers if s.host == "compute1" and s.project_id == "project-a"
            )
            ours = next(s for s in servers if s.host == "compute2" and s.project_id == "project-b")
            # Three consumers at three addresses: the per-address share does not stop them.
            for consumer in silent:
                await subscribe(client, theirs, consumer.url + "/failure")
            await subscribe(client, ours, fast.url + "/failure")
            await client.put("/events", json=[host_down("compute1")])
            await eventually(lambda: len(held) == 2, what="the project's share in use")
            await client.put("/events", json=[host_down("compute2")])
            await eventually(lambda: len(fast.received) == 1, timeout=2.5, what="the other project")
            assert len(held) == 2  # the third waits for its project's share, not for others
    finally:
        hang.set()
        for consumer in (*silent, fast):
            await consumer.stop()
