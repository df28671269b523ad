"""Emptying one host as its owners agreed: each instance moved (migrate, live-migrate)
or left to its owner (OWN_ACTION), never more of a group at once than the group allows
(`max_impacted_members`), and a group's member given its `recovery_time` before the
next may go. Moves run concurrently up to `max_parallel_moves`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from opendoctor.core.maintenance import (
    INSTANCE_ACTION_DONE,
    INSTANCE_DONE,
    INSTANCE_FAILED,
    INSTANCE_MOVING,
    LIVE_MIGRATE,
    MIGRATE,
    OWN_ACTION,
    InstanceConstraints,
    InstanceGroupConstraints,
    InstanceProgress,
    Session,
)
from opendoctor.core.model import Server
from opendoctor.core.ports import VimError
from opendoctor.infra import metrics
from opendoctor.maintenance.owners import Owners
from opendoctor.maintenance.plan import target_for
from opendoctor.maintenance.reach import Reach

log = logging.getLogger(__name__)


class Drain:
    def __init__(
        self,
        reach: Reach,
        session: Session,
        owners: Owners,
        save: Callable[[], Awaitable[None]],
    ) -> None:
        self.reach = reach
        self.session = session
        self.owners = owners
        self.save = save
        self._moves = asyncio.Semaphore(reach.settings.max_parallel_moves)
        self._groups: dict[str, asyncio.Semaphore] = {}
        # Hosts a move must not go to (the session's, not yet maintained: an instance
        # put there would have to move again), and vCPUs on their way to each host.
        self.avoid: set[str] = set()
        self._placing: Counter[str] = Counter()

    def _group_slot(self, group: InstanceGroupConstraints | None) -> asyncio.Semaphore | None:
        if group is None:
            return None
        slot = self._groups.get(group.group_id)
        if slot is None:
            slot = self._groups[group.group_id] = asyncio.Semaphore(
                max(1, group.max_impacted_members)
            )
        return slot

    async def empty(
        self,
        items: list[InstanceProgress],
        constraints: dict[str, InstanceConstraints],
        groups: dict[str, InstanceGroupConstraints],
    ) -> list[InstanceProgress]:
        """Move every item off its host; returns those that failed."""
        await asyncio.gather(
            *(self._one(i.host, i, constraints.get(i.instance_id), groups) for i in items)
        )
        return [i for i in items if i.state == INSTANCE_FAILED]

    async def _one(
        self,
        host: str,
        item: InstanceProgress,
        constraint: InstanceConstraints | None,
        groups: dict[str, InstanceGroupConstraints],
    ) -> None:
        if item.state == INSTANCE_DONE:
            return
        group = groups.get(item.group_id) if item.group_id else None
        slot = self._group_slot(group)
        if slot is not None:
            await slot.acquire()
        try:
            async with self._moves:
                await self._move(host, item, constraint)
            if group is not None and group.recovery_time and item.state == INSTANCE_DONE:
                # The group's next member waits until this one has recovered.
                await asyncio.sleep(min(group.recovery_time, 3600))
        finally:
            if slot is not None:
                slot.release()

    async def _move(
        self, host: str, item: InstanceProgress, constraint: InstanceConstraints | None
    ) -> None:
        settings = self.reach.settings
        item.state, item.started = INSTANCE_MOVING, time.time()
        await self.save()
        try:
            if not self._still_on(host, item.instance_id):
                # Off already (its owner's own action, a scale-in): where is it now?
                item.to_host = self._where(host, item.instance_id)
            elif item.action == OWN_ACTION:
                await self._own_action(host, item, constraint)
            else:
                moved = await asyncio.wait_for(self._vim_move(host, item), settings.move_timeout)
                item.to_host = moved.host
        except (VimError, TimeoutError) as exc:
            item.state, item.finished = INSTANCE_FAILED, time.time()
            item.error = str(exc) or exc.__class__.__name__
            metrics.MAINTENANCE_MOVES.labels(item.action or "", "failed").inc()
            self.session.note(f"{item.action} of {item.instance_id} failed: {item.error}")
            log.warning(
                "maintenance move failed",
                extra={"session": self.session.session_id, "server": item.instance_id,
                       "error": item.error},
            )  # fmt: skip
            await self.save()
            return
        item.state, item.finished = INSTANCE_DONE, time.time()
        metrics.MAINTENANCE_MOVES.labels(item.action or "", "done").inc()
        self.session.note(f"{item.instance_id} off {host} ({item.action}) to {item.to_host}")
        await self.save()
        await self.owners.tell(INSTANCE_ACTION_DONE, item.project_id, item.instance_id, host)

    async def _vim_move(self, host: str, item: InstanceProgress) -> Server:
        vim = self.reach.vim()
        call = vim.live_migrate if item.action == LIVE_MIGRATE else vim.migrate
        server = next((s for s in self.reach.servers_on(host) if s.id == item.instance_id), None)
        target = None
        if server is not None:
            target = target_for(
                server, self.reach.hosts(), self.reach.servers_on, self.avoid, self._placing
            )
        if target is None:
            return await call(item.instance_id)
        size = server.vcpus if server is not None else 0
        self._placing[target] += size
        try:
            return await call(item.instance_id, target)
        except VimError as exc:
            if exc.status != 400:
                raise
            # A VIM that takes no target here (an older API): its scheduler chooses.
            return await call(item.instance_id)
        finally:
            self._placing[target] -= size

    def _still_on(self, host: str, instance_id: str) -> bool:
        return any(s.id == instance_id for s in self.reach.servers_on(host))

    async def _own_action(
        self, host: str, item: InstanceProgress, constraint: InstanceConstraints | None
    ) -> None:
        """The owner moves (or deletes) the instance itself: wait until it is off."""
        limit = self.reach.settings.own_action_timeout
        if constraint is not None and constraint.lead_time:
            limit = max(limit, float(constraint.lead_time))
        deadline = time.monotonic() + limit
        while self._still_on(host, item.instance_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"its owner did not take it off {host} in {limit:.0f} s")
            await asyncio.sleep(self.reach.settings.step_interval)
        item.to_host = self._where(host, item.instance_id)

    def _where(self, left: str, instance_id: str) -> str | None:
        """The host the instance runs on now, other than `left`; None if it is gone."""
        hosts = (h for h in self.reach.hosts() if h != left)
        return next((h for h in hosts if self._still_on(h, instance_id)), None)


def default_action(
    asked: dict[str, str],
    instance_id: str,
    constraint: InstanceConstraints | None,
    fallback: str,
) -> str:
    """The owner's choice, else the instance's `migration_type`, else the default."""
    if instance_id in asked:
        return asked[instance_id]
    if constraint is not None and constraint.migration_type:
        return constraint.migration_type
    return fallback if fallback in (MIGRATE, LIVE_MIGRATE) else MIGRATE
