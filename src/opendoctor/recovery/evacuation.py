"""Recovery: fence a failed host, then evacuate its servers and check they serve again.

Runs after the owners are notified and the host is marked down (the VIM refuses to
evacuate from a host it still thinks is up). A host with a fence device is powered off
and confirmed off first (T05); if that fails, none of its servers move. Bounded
parallelism; every server gets a `RecoveryItem` saying where it went, when, and with
what result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import Server
from opendoctor.core.ports import FenceError, VimDriver, VimError
from opendoctor.core.settings import RecoverySettings
from opendoctor.infra import metrics
from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.recovery.fencing import Fencing

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        vim: VimDriver,
        http: HttpClient,
        settings: RecoverySettings,
        on_moved: Callable[[Server], None] | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.vim = vim
        self.http = http
        self.settings = settings
        self.on_moved = on_moved
        self.fencing = fencing

    async def __call__(self, fault: Fault, servers: list[Server]) -> None:
        items = [RecoveryItem(server_id=s.id, name=s.name, from_host=s.host) for s in servers]
        fault.recovery = items
        hosts = sorted({i.from_host for i in items})
        reasons = await asyncio.gather(*(self._fence(fault, h) for h in hosts))
        refused = dict(zip(hosts, reasons, strict=True))
        for item in items:
            reason = refused[item.from_host]
            if reason is not None:
                # A host that may still run its servers: evacuating them would run each
                # twice. They stay where they are, and the record says why.
                item.started = item.finished = time.time()
                item.result, item.error = "failed", reason
                metrics.RECOVERIES.labels("failed").inc()
        await self._evacuate(fault, [i for i in items if i.result == "pending"])

    async def _fence(self, fault: Fault, host: str) -> str | None:
        """Fence `host` if it has a fence device; why its servers must not move, or None."""
        if self.fencing is None or not self.fencing.can_fence(host):
            log.warning("evacuating without fencing: no fence device", extra={"host": host})
            return None
        try:
            confirmed = await self.fencing.fence(host)
        except FenceError as exc:
            return f"not evacuated: fencing {host} failed: {exc}"
        fault.mark("T05", max(confirmed, fault.trace.get("T05", 0.0)))
        return None

    async def _evacuate(self, fault: Fault, items: list[RecoveryItem]) -> None:
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(item: RecoveryItem) -> None:
            async with limit:
                item.started = time.time()
                fault.mark("T06", item.started)
                try:
                    moved = await self.vim.evacuate(item.server_id)
                    item.to_host = moved.host
                    if self.on_moved is not None:
                        self.on_moved(moved)
                    if moved.endpoint:
                        await self._wait_serving(moved.endpoint)
                except Exception as exc:
                    # Whatever went wrong, the item ends: a recovery left pending would
                    # wait for ever, and nobody would hear that this server was not moved.
                    item.result = "failed"
                    item.error = str(exc) or exc.__class__.__name__
                    metrics.RECOVERIES.labels("failed").inc()
                    expected = isinstance(exc, (VimError, TimeoutError))
                    log.error(
                        "evacuation failed",
                        extra={"server": item.server_id, "error": item.error},
                        exc_info=None if expected else exc,
                    )
                else:
                    item.result = "ok"
                    metrics.RECOVERIES.labels("ok").inc()
                item.finished = time.time()

        await asyncio.gather(*(one(i) for i in items))

    async def _wait_serving(self, endpoint: str) -> None:
        """Poll the server's application until it answers 200, or time out."""
        deadline = time.monotonic() + self.settings.serve_timeout
        while True:
            try:
                resp = await self.http.get(endpoint, timeout=1.0)
                if resp.ok:
                    return
            except HttpError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{endpoint} did not serve within {self.settings.serve_timeout}s"
                )
            await asyncio.sleep(0.02)
