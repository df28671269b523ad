"""The host monitor as its own process: probes the VIM's hosts, POSTs events to the API.

Embedded mode hands events to the inspector in-process; this is the same prober for a
deployment where the monitor runs elsewhere (closer to the hosts, say). Several can run
as replicas sharing a lease in the database (`monitor.lease`): one probes, the others
take over within about `monitor.lease_ttl` seconds if it dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from pathlib import Path

from opendoctor.config import Settings
from opendoctor.controller.base import VimError
from opendoctor.httpclient import HttpClient, HttpError
from opendoctor.leader import Leadership
from opendoctor.model import Event, Host, iso
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.procs import announce_ready, until_signalled
from opendoctor.service import make_vim
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore

log = logging.getLogger(__name__)


def doctor_event(event: Event) -> dict[str, object]:
    """The Doctor wire form of an event."""
    return {
        "time": iso(event.time),
        "type": event.type,
        "details": {
            "hostname": event.hostname,
            "status": event.status,
            "monitor": event.monitor,
            "monitor_event_id": event.monitor_event_id,
            **event.details,
        },
    }


class EventPoster:
    """Sends events to `PUT {api}/events`, retrying until the API has accepted them."""

    def __init__(self, api: str, http: HttpClient, token: str | None) -> None:
        self.url = api.rstrip("/") + "/events"
        self.http = http
        self.headers = {"X-Auth-Token": token} if token else {}

    async def __call__(self, event: Event) -> None:
        delay = 0.05
        while True:
            try:
                resp = await self.http.put(
                    self.url, json=[doctor_event(event)], headers=self.headers
                )
                if resp.ok:
                    return
                if 400 <= resp.status < 500:
                    log.error(
                        "API refused an event",
                        extra={"status": resp.status, "body": resp.body[:500]},
                    )
                    return
            except HttpError as exc:
                log.warning("API not reachable, retrying", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Probing:
    """The prober of this process while it should probe: always, or while it leads."""

    def __init__(self, settings: Settings, emit: EventPoster) -> None:
        self.settings = settings
        self.emit = emit
        self.hosts: dict[str, Host] = {}
        self.prober: HostProber | None = None

    def watch(self, host: Host) -> None:
        self.hosts[host.name] = host
        if self.prober is not None:
            self.prober.watch(host)

    def unwatch(self, name: str) -> None:
        self.hosts.pop(name, None)
        if self.prober is not None:
            self.prober.unwatch(name)

    async def lead(self, leading: bool) -> None:
        if leading and self.prober is None:
            # A fresh prober: every host counts as answering from now, so a new leader
            # does not blame the hosts for the time nobody probed them.
            self.prober = HostProber(self.settings.monitor, self.emit)
            for host in self.hosts.values():
                self.prober.watch(host)
            await self.prober.start()
        elif not leading and self.prober is not None:
            prober, self.prober = self.prober, None
            await prober.stop()


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def run(settings: Settings, api: str, ready_file: Path | None = None) -> None:
    http = HttpClient()
    vim = make_vim(settings)
    probing = Probing(settings, EventPoster(api, http, settings.api.southbound_token))
    while True:
        try:
            hosts = await vim.list_hosts()
            break
        except VimError as exc:
            log.warning("VIM not answering, retrying", extra={"error": str(exc)})
            await asyncio.sleep(0.5)
    for host in hosts:
        probing.watch(host)

    db: Database | None = None
    leadership: Leadership | None = None
    if settings.monitor.lease is None:
        await probing.lead(True)
    else:
        db = Database(settings.db_url)
        await db.migrate()
        holder = holder_id()
        leadership = Leadership(
            LeaseStore(db),
            f"monitor:{settings.monitor.lease}",
            holder,
            settings.monitor.lease_ttl,
            probing.lead,
        )
        leadership.start()
        log.info("monitor replica waiting to lead", extra={"holder": holder})

    async def follow() -> None:
        async for change in vim.changes():
            if change.kind == "host" and change.host is not None:
                if change.op == "delete":
                    probing.unwatch(change.host.name)
                else:
                    probing.watch(change.host)

    follower = asyncio.create_task(follow())
    log.info("monitoring hosts", extra={"hosts": len(hosts), "api": api})
    announce_ready(ready_file, api)
    try:
        await until_signalled()
    finally:
        follower.cancel()
        if leadership is not None:
            await leadership.stop()  # a clean stop hands over at once
        await probing.lead(False)
        if db is not None:
            await db.close()
        await vim.close()
        await http.close()
