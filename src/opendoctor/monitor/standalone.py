"""The host monitor as its own process: probes the VIM's hosts, POSTs events to the API.

Embedded mode hands events to the inspector in-process; this is the same prober for a
deployment where the monitor runs elsewhere (closer to the hosts, say). Several can run
as replicas sharing a lease in the database (`monitor.lease`): one probes, the others
take over within about `monitor.lease_ttl` seconds if it dies.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from opendoctor.controller.factory import make_vim
from opendoctor.core.model import Event, iso
from opendoctor.core.ports import VimError
from opendoctor.core.settings import Settings
from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.infra.procs import announce_ready, until_signalled
from opendoctor.monitor.probing import Probing, open_reports
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.pipeline import FaultStore

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


AUTH_RETRY = 5.0  # seconds between tries while the API refuses our credentials


class EventPoster:
    """Sends events to `PUT {api}/events`, retrying until the API has accepted them."""

    def __init__(
        self, api: str, http: HttpClient, token: str | None, auth_retry: float = AUTH_RETRY
    ) -> None:
        self.url = api.rstrip("/") + "/events"
        self.http = http
        self.headers = {"X-Auth-Token": token} if token else {}
        self.auth_retry = auth_retry

    async def __call__(self, event: Event) -> None:
        delay = 0.05
        while True:
            try:
                resp = await self.http.put(
                    self.url, json=[doctor_event(event)], headers=self.headers
                )
                if resp.ok:
                    return
                if resp.status in (401, 403):
                    # A credential an operator can fix: the fault stays worth reporting.
                    log.error(
                        "API refused this monitor's credentials; retrying (set "
                        "OPENDOCTOR_MONITOR__TOKEN to a token of api.monitor_tokens)",
                        extra={"status": resp.status, "event": event.id},
                    )
                    delay = max(delay, self.auth_retry)
                elif resp.status == 429:
                    log.warning("API asks this monitor to slow down; retrying")
                elif 400 <= resp.status < 500:
                    log.error(
                        "API refused an event",
                        extra={"status": resp.status, "body": resp.body[:500]},
                    )
                    return
            except HttpError as exc:
                log.warning("API not reachable, retrying", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(delay, 2.0))  # auth_retry stays as it is


async def run(settings: Settings, api: str, ready_file: Path | None = None) -> None:
    http = HttpClient()
    vim = make_vim(settings)
    db: Database | None = None
    leases: LeaseStore | None = None
    if settings.monitor.lease is not None:
        db = Database(settings.db_url)
        await db.migrate()
        leases = LeaseStore(db)
    faults = FaultStore(db) if db is not None else None
    reported = (lambda: open_reports(faults)) if faults is not None else None
    secret = settings.monitor.token or settings.api.southbound_token
    token = secret.get_secret_value() if secret is not None else None
    if token is None:
        log.warning(
            "no monitor token (OPENDOCTOR_MONITOR__TOKEN): the API takes these events "
            "only if it allows anonymous monitors"
        )
    probing = Probing(settings, EventPoster(api, http, token), reported)
    while True:
        try:
            hosts = await vim.list_hosts()
            break
        except VimError as exc:
            log.warning("VIM not answering, retrying", extra={"error": str(exc)})
            await asyncio.sleep(0.5)
    for host in hosts:
        probing.watch(host)
    await probing.start(leases)

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
        await probing.stop()
        if db is not None:
            await db.close()
        await vim.close()
        await http.close()
