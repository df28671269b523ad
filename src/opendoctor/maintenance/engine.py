"""Runs the sessions: each in a task of its own, from where its record says it is.

At start every session not ended is taken up (after a restart it resumes); in a
scaled-out deployment a session runs where its lease (`maintenance:<id>`) is held, and
another process takes it over when that lease lapses. Changes from the API (an owner's
answer, a pause, a cancel) are made to the running session's record here when it runs
in this process, and through the store otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from opendoctor.core.maintenance import Session
from opendoctor.infra import metrics
from opendoctor.maintenance.flow import Flow
from opendoctor.maintenance.reach import Reach, Saver, Waker
from opendoctor.store.leases import LeaseStore

log = logging.getLogger(__name__)

LEASE_TTL = 15.0


class Engine:
    def __init__(
        self,
        reach: Reach,
        leases: LeaseStore | None,
        holder: str,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.reach = reach
        self.lease_ttl = lease_ttl
        self.leases = leases
        self.holder = holder
        self.waker = Waker()
        self.saver = Saver(reach.store, reach.publish)
        self._live: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._takeover: asyncio.Task[None] | None = None
        self.started = False

    async def start(self) -> None:
        self.started = True
        await self._take_up()
        if self.leases is not None:
            self._takeover = asyncio.create_task(self._keep_taking_up(), name="maintenance")

    async def stop(self) -> None:
        self.started = False
        tasks = [*self._tasks.values(), *([self._takeover] if self._takeover else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.leases is not None and self._live:
            await self.leases.release_many([f"maintenance:{i}" for i in self._live], self.holder)
        self._tasks.clear()
        self._live.clear()

    def running(self) -> list[str]:
        return list(self._live)

    def launch(self, session: Session) -> None:
        if not self.started or session.session_id in self._tasks or session.done:
            return
        self._live[session.session_id] = session
        metrics.MAINTENANCE_RUNNING.set(len(self._live))
        task = asyncio.create_task(self._run(session), name=f"maintenance {session.session_id}")
        self._tasks[session.session_id] = task

    def wake(self, session_id: str) -> None:
        self.waker.wake(session_id)

    async def update(self, session_id: str, change: Callable[[Session], None]) -> Session | None:
        """Apply an API change to the session where it runs (here: the live record)."""
        live = self._live.get(session_id)
        if live is None:
            stored = await self.reach.store.get(session_id)
            if stored is None:
                return None
            change(stored)
            await self.reach.store.save(stored)
            return stored
        change(live)
        await self.saver.save(live)
        self.waker.wake(session_id)
        return live

    async def current(self, session_id: str) -> Session | None:
        live = self._live.get(session_id)
        return live if live is not None else await self.reach.store.get(session_id)

    async def _run(self, session: Session) -> None:
        renew: asyncio.Task[None] | None = None
        name = f"maintenance:{session.session_id}"
        try:
            if self.leases is not None:
                if not await self.leases.acquire(name, self.holder, self.lease_ttl):
                    return  # another process runs it
                renew = asyncio.create_task(self._renew(session.session_id))
            log.info("maintenance session running", extra={"session": session.session_id})
            await Flow(self.reach, session, self.waker, self.saver).run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("maintenance session stopped", extra={"session": session.session_id})
        finally:
            if renew is not None:
                renew.cancel()
                await asyncio.gather(renew, return_exceptions=True)
            self._tasks.pop(session.session_id, None)
            self._live.pop(session.session_id, None)
            metrics.MAINTENANCE_RUNNING.set(len(self._live))
            if session.done:
                metrics.MAINTENANCE_SESSIONS.labels(session.state).inc()
            self.waker.forget(session.session_id)
            self.saver.forget(session.session_id)
            if self.leases is not None:
                with contextlib.suppress(Exception):
                    await self.leases.release(name, self.holder)

    async def _renew(self, session_id: str) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            name = f"maintenance:{session_id}"
            if not await self.leases.acquire(name, self.holder, self.lease_ttl):
                # Another process has it now: stop here rather than run it twice.
                log.warning("maintenance session lease lost", extra={"session": session_id})
                task = self._tasks.get(session_id)
                if task is not None:
                    task.cancel()
                return

    async def _take_up(self) -> None:
        waiting = [s for s in await self.reach.store.active() if s.session_id not in self._tasks]
        if self.leases is not None and waiting:
            # Only those no other process runs: a session launched here only to find its
            # lease held would show its stale record as the live one meanwhile.
            names = {f"maintenance:{s.session_id}": s for s in waiting}
            won = await self.leases.acquire_many(names, self.holder, self.lease_ttl)
            waiting = [names[n] for n in sorted(won)]
        for session in waiting:
            log.info("maintenance session taken up", extra={"session": session.session_id})
            self.launch(session)

    async def _keep_taking_up(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 2)
            try:
                await self._take_up()
            except Exception:
                log.exception("maintenance sessions not taken up")
