"""Leader election for singleton roles, on database leases.

Each replica runs a `Leadership` for the role: it tries to take the lease every
`ttl / 3` seconds and renews it while it holds it. A leader that cannot renew (its
database unreachable, its process stalled) steps down itself before its lease runs
out, so that two replicas never both lead; a replica that dies simply stops renewing,
and another takes over within about `ttl` (plus one attempt interval). A clean stop
releases the lease at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from opendoctor.store.leases import LeaseStore

log = logging.getLogger(__name__)

OnChange = Callable[[bool], Awaitable[None]]


class Leadership:
    def __init__(
        self, leases: LeaseStore, role: str, holder: str, ttl: float, on_change: OnChange
    ) -> None:
        self.leases = leases
        self.role = role
        self.holder = holder
        self.ttl = ttl
        self.on_change = on_change
        self.leading = False
        self.changed = asyncio.Event()  # set on every change (tests and the benchmark)
        self._renewed = 0.0  # monotonic time of the last successful renewal
        self._task: asyncio.Task[None] | None = None

    async def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        log.info("leadership %s", "taken" if leading else "lost", extra={"role": self.role})
        await self.on_change(leading)
        self.changed.set()

    async def attempt(self) -> None:
        """One round: take or renew the lease, or step down if it may have run out."""
        started = time.monotonic()
        try:
            won = await self.leases.acquire(self.role, self.holder, self.ttl)
        except Exception as exc:  # the database: we cannot know, so be careful
            log.warning("lease not renewed", extra={"role": self.role, "error": str(exc)})
            # Step down before the lease can expire under us: another may take it then.
            if self.leading and time.monotonic() - self._renewed > self.ttl * 2 / 3:
                await self._set(False)
            return
        if won:
            self._renewed = started
        await self._set(won)

    async def _run(self) -> None:
        while True:
            await self.attempt()
            await asyncio.sleep(self.ttl / 3)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leader-{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading:
            try:
                await self.leases.release(self.role, self.holder)
            except Exception as exc:
                log.warning("lease not released", extra={"role": self.role, "error": str(exc)})
            await self._set(False)
