"""What a VNF manager does with an active/standby pair when it hears the active failed.

On the failure notification for a pair's active server it activates the standby's
application, enables the standby's load-balancer member and disables the failed one
(through the lab API here; through the VIM's load-balancer API in a real cloud), and
records when all of that was done (T10). The pair then swaps roles, so a second
failure switches back: but only to a standby that is well. Before switching, the
standby must be ACTIVE in the VIM, say it is healthy, and answer on its endpoint; if it
does not (the server that failed last time, not yet repaired), nothing is switched and
the switch-over is reported as having no healthy standby.

Planned maintenance switches the same way, before the active is moved (`claim` then
`switch(record, demote=True)`, awaited: `opendoctor.tools.vnfm_manager`); the old active's
application is then made standby, as it is still running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.lab.client import LabClient

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Switchover:
    failed: str  # the active taken out of service: failed, or about to be moved
    standby: str
    notified: float  # T09: the failure notification arrived
    done: float | None = None  # T10: standby active and the load balancer switched
    error: str | None = None
    reason: str = "failure"  # or "maintenance"


class Switcher:
    def __init__(self, lab: LabClient, pairs: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.http = HttpClient(timeout=1.0)
        self.pairs: dict[str, str] = dict(pairs or {})  # active server id -> standby id
        self.history: list[Switchover] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def set_pair(self, active: str, standby: str) -> None:
        self.pairs[active] = standby

    def claim(
        self, active: str | None, notified: float, reason: str = "failure"
    ) -> Switchover | None:
        """The switch-over of `active`'s pair, if it is a pair's active server, for
        `switch` to carry out. The pair is out of `pairs` until then: a repeated
        notification meanwhile starts nothing."""
        standby = self.pairs.pop(active, None) if active else None
        if standby is None or active is None:
            return None
        record = Switchover(failed=active, standby=standby, notified=notified, reason=reason)
        self.history.append(record)
        return record

    def on_failure(self, instance_id: str | None, arrived: float) -> bool:
        """Start a switch-over if `instance_id` is a pair's active server."""
        record = self.claim(instance_id, arrived)
        if record is None:
            return False
        # The callback is answered at once; the switch-over runs beside it.
        task = asyncio.ensure_future(self.switch(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def standby_problem(self, standby: str) -> str | None:
        """Why `standby` cannot take over, or None if it is well."""
        detail = await self.lab.server_detail(standby)
        if detail.get("status") != "ACTIVE":
            return f"it is {detail.get('status')} in the VIM"
        if not detail.get("healthy", True):
            return "it reports itself unhealthy"
        try:
            # Any answer will do: a standby's application answers 503 until activated.
            await self.http.request("GET", detail["endpoint"])
        except HttpError as exc:
            return f"it does not answer at {detail['endpoint']}: {exc}"
        return None

    async def switch(self, record: Switchover, demote: bool = False) -> None:
        """Carry out a claimed switch-over; `record` says how it went. With `demote`, the
        old active's application is made standby afterwards (it is still running)."""
        try:
            problem = await self.standby_problem(record.standby)
            if problem is not None:
                record.error = f"no healthy standby: {record.standby}: {problem}"
                self.pairs[record.failed] = record.standby  # a repaired standby may serve
                log.error(
                    "no healthy standby: not switched over",
                    extra={"failed": record.failed, "standby": record.standby, "why": problem},
                )
                return
            # The standby's application first, so the load balancer never sends it
            # traffic it would refuse; then both members at once.
            await self.lab.set_role(record.standby, "active")
            members = {m["server_id"]: m for m in await self.lab.lb_members()}
            changes = []
            if record.standby in members:
                changes.append(self.lab.set_member(members[record.standby]["id"], True))
            if record.failed in members:
                changes.append(self.lab.set_member(members[record.failed]["id"], False))
            if demote:
                # Planned: the old active still serves, so the pool is never left empty
                # for a moment; the standby is in before the active goes out.
                for change in changes:
                    await change
            else:
                await asyncio.gather(*changes)
            record.done = time.time()
            self.pairs[record.standby] = record.failed
            log.info("switched over", extra={"failed": record.failed, "to": record.standby})
        except Exception as exc:
            record.error = f"{exc.__class__.__name__}: {exc}"
            # Put the pair back so a repeated notification can try again.
            self.pairs[record.failed] = record.standby
            log.exception("switch-over failed")
            return
        if demote:
            # Only once no client is sent to it: until then it serves as it did.
            try:
                await self.lab.set_role(record.failed, "standby")
            except Exception as exc:
                record.error = f"switched over, but {record.failed} not made standby: {exc}"
                log.warning("old active not made standby", extra={"server": record.failed})

    def report(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.history]

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()
        await self.lab.close()
