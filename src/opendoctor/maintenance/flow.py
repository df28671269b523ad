"""One session's way through Fenix's default workflow (DESIGN §5):

MAINTENANCE (owners asked, until `maintenance_at`) → host by host, emptiest first:
PREPARE_MAINTENANCE (the first host) or PLANNED_MAINTENANCE (the others: owners say how
each instance moves; it is moved) → START_MAINTENANCE (the empty host maintained and
returned) → MAINTENANCE_COMPLETE (owners told) → MAINTENANCE_DONE.

Every step is recorded in the session before the next begins, and each is safe to do
again: a session resumed after a restart asks no owner twice for the same thing, moves
nothing that already moved, and takes up the host it was on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from opendoctor.core.maintenance import (
    HOST_DRAINING,
    HOST_IN_MAINTENANCE,
    HOST_RETURNED,
    HOST_WAITING,
    INSTANCE_DONE,
    MAINTENANCE,
    MAINTENANCE_CANCELLED,
    MAINTENANCE_COMPLETE,
    MAINTENANCE_DONE,
    MAINTENANCE_FAILED,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    SCALE_IN,
    START_MAINTENANCE,
    InstanceConstraints,
    InstanceGroupConstraints,
    InstanceProgress,
    Session,
)
from opendoctor.maintenance.drain import Drain, default_action
from opendoctor.maintenance.hosts import HostWork
from opendoctor.maintenance.owners import Owners
from opendoctor.maintenance.plan import next_batch, room_problem
from opendoctor.maintenance.reach import Reach, Saver, Stop, Waker, wait_until

log = logging.getLogger(__name__)


# The states a session works through hosts in (or is about to).
STEPS = (MAINTENANCE, SCALE_IN, PREPARE_MAINTENANCE, START_MAINTENANCE, PLANNED_MAINTENANCE)


class Cancelled(Exception):
    pass


class Flow:
    def __init__(self, reach: Reach, session: Session, waker: Waker, saver: Saver) -> None:
        self.reach = reach
        self.saver = saver
        self.session = session
        self.waker = waker
        self.owners = Owners(reach, session)
        self.drain = Drain(reach, session, self.owners, self.save)
        self.hosts = HostWork(reach, session, self.owners, self.save, lambda: self._event)

    async def save(self) -> None:
        await self.take_up_changes()
        await self.saver.save(self.session)

    async def take_up_changes(self) -> None:
        """Scaled out: what the API changed in the stored record (answers, pause, cancel)
        into the running one, before it is written over."""
        if not self.reach.shared:
            return
        stored = await self.reach.store.get(self.session.session_id)
        if stored is None:
            return
        session = self.session
        session.paused = stored.paused
        session.cancel_requested = session.cancel_requested or stored.cancel_requested
        for project_id, theirs in stored.projects.items():
            mine = session.projects.get(project_id)
            if (
                mine is not None
                and theirs.asked == mine.asked
                and theirs.replied_at is not None
                and (mine.replied_at or 0.0) < theirs.replied_at
            ):
                mine.reply, mine.replied_at = theirs.reply, theirs.replied_at
                mine.instance_actions.update(theirs.instance_actions)
                mine.instance_ids = theirs.instance_ids

    @property
    def _event(self) -> asyncio.Event:
        return self.waker.event(self.session.session_id)

    async def run(self) -> None:
        session = self.session
        try:
            if session.state == MAINTENANCE:
                await self._consent()
            if session.state in (MAINTENANCE, SCALE_IN):
                await self._room()
            if session.state in STEPS:
                await self._hosts()
            await self._complete(MAINTENANCE_DONE)
        except Cancelled:
            await self.hosts.back_in_service()
            await self._complete(MAINTENANCE_CANCELLED)
        except Stop as exc:
            session.error = str(exc)
            session.note(f"failed: {exc}")
            log.error(
                "maintenance session failed",
                extra={"session": session.session_id, "error": str(exc)},
            )
            await self.hosts.back_in_service()
            await self._complete(MAINTENANCE_FAILED)

    # -- steps ---------------------------------------------------------------------------

    def _owners_on(self, hosts: list[str]) -> dict[str, list[str]]:
        projects: dict[str, list[str]] = {}
        for host in hosts:
            for server in self.reach.servers_on(host):
                projects.setdefault(server.project_id, []).append(server.id)
        return projects

    async def _consent(self) -> None:
        """MAINTENANCE: every owner with instances on the hosts is asked; a NACK ends the
        session; the work starts at `maintenance_at`, once all answered or the time for
        answers is over."""
        session = self.session
        projects = self._owners_on(session.hosts)
        deadline = max(session.maintenance_at, time.time() + self.reach.settings.reply_timeout)
        await self.owners.ask(MAINTENANCE, projects, deadline)
        await self.save()
        await self._answers(list(projects))
        await self._until(session.maintenance_at, "maintenance_at")

    async def _answers(self, projects: list[str]) -> None:
        async def answered() -> bool:
            await self.take_up_changes()
            self._checkpoint()
            # One refusal is enough: the others' answers no longer matter.
            return not self.owners.pending(projects) or bool(self.owners.refused(projects))

        self.session.waiting = f"answers of {len(projects)} projects" if projects else None
        await wait_until(answered, float("inf"), self._event, self.reach.settings.step_interval)
        self.session.waiting = None
        refused = self.owners.refused(projects)
        if refused:
            raise Stop(f"refused by {', '.join(sorted(refused))}")
        self.owners.settle_defaults(projects)
        await self.save()

    async def _until(self, moment: float, why: str) -> None:
        async def due() -> bool:
            self._checkpoint()
            return time.time() >= moment

        if time.time() < moment:
            self.session.waiting = why
            await self.save()
            await wait_until(due, float("inf"), self._event, self.reach.settings.step_interval)
            self.session.waiting = None

    def _checkpoint(self) -> None:
        if self.session.cancel_requested:
            raise Cancelled

    async def _held(self) -> None:
        """Between hosts: not while the admin paused the session, nor (if so set) while
        another host has a fault whose recovery needs the capacity."""
        session = self.session

        def reason() -> str | None:
            if session.paused:
                return "paused by the admin"
            if self.reach.settings.pause_on_fault:
                # Any host's, the session's own too (one still to be maintained that
                # failed is recovery's first); a host in maintenance raises none.
                faulted = self.reach.faulted_hosts()
                if faulted:
                    return f"fault on {', '.join(sorted(faulted))}"
            return None

        async def free() -> bool:
            await self.take_up_changes()
            self._checkpoint()
            why = reason()
            if why != session.waiting:
                session.waiting = why
                if why:
                    session.note(f"held: {why}")
                await self.save()
            return why is None

        await wait_until(free, float("inf"), self._event, self.reach.settings.step_interval)

    async def _room(self) -> None:
        """SCALE_IN: if the hosts left in service could not take the instances of the
        fullest host, the owners are asked to scale in first; if they still could not,
        the session fails rather than strand an instance."""
        session = self.session
        left = [h for h, p in session.host_progress.items() if p.state != HOST_RETURNED]
        if not left:
            return
        fullest = max(left, key=lambda h: len(self.reach.servers_on(h)))
        if room_problem([fullest], self.reach.hosts(), self.reach.servers_on) is None:
            return
        session.state = SCALE_IN
        projects = self._owners_on(left)
        deadline = time.time() + self.reach.settings.reply_timeout
        await self.owners.ask(SCALE_IN, projects, deadline)
        await self.save()
        await self._answers(list(projects))
        problem = room_problem([fullest], self.reach.hosts(), self.reach.servers_on)
        if problem is not None:
            raise Stop(f"no room to empty {fullest} even after scaling in: {problem}")

    async def _hosts(self) -> None:
        session = self.session
        limit = int(
            session.metadata.get("max_parallel_hosts") or self.reach.settings.max_parallel_hosts
        )
        while True:
            await self._held()
            progress = session.host_progress
            left = [h for h, p in progress.items() if p.state != HOST_RETURNED]
            if not left:
                return
            # The hosts in hand first (a session resumed after a restart).
            batch = [h for h in left if progress[h].state != HOST_WAITING]
            if not batch:
                servers = [s.id for h in left for s in self.reach.servers_on(h)]
                constraints = await self.reach.store.instances_by_ids(servers)
                groups = await self._groups(constraints.values())
                batch = next_batch(
                    left, limit, self.reach.hosts(), self.reach.servers_on, constraints, groups
                )
            await self._batch(batch)

    async def _groups(
        self, constraints: Iterable[InstanceConstraints]
    ) -> dict[str, InstanceGroupConstraints]:
        groups: dict[str, InstanceGroupConstraints] = {}
        for c in constraints:
            if c.group_id and c.group_id not in groups:
                group = await self.reach.store.get_group(c.group_id)
                if group is not None:
                    groups[c.group_id] = group
        return groups

    async def _batch(self, hosts: list[str]) -> None:
        """Empty `hosts` together, then maintain and return them together."""
        session = self.session
        session.current_host = ", ".join(hosts)
        to_empty = [h for h in hosts if session.host_progress[h].state != HOST_IN_MAINTENANCE]
        if to_empty:
            first = not any(p.state == HOST_RETURNED for p in session.host_progress.values())
            session.state = PREPARE_MAINTENANCE if first else PLANNED_MAINTENANCE
            for host in to_empty:
                progress = session.host_progress[host]
                progress.started = progress.started or time.time()
                progress.state = HOST_DRAINING
                await self.hosts.set_enabled(host, False)
                session.note(f"{host}: disabled, to be emptied")
            await self.save()
            await self._empty(to_empty, session.state)
        session.state = START_MAINTENANCE
        await asyncio.gather(*(self.hosts.maintain(h) for h in hosts))
        session.current_host = None

    async def _empty(self, hosts: list[str], state: str) -> None:
        session = self.session
        for host in hosts:
            for server in self.reach.servers_on(host):
                known = session.instances.get(server.id)
                if known is None or (known.host not in hosts and known.state == INSTANCE_DONE):
                    # New to the session, or moved here off a host emptied before: it
                    # moves (again) off this one.
                    item = InstanceProgress(server.id, server.project_id, host, name=server.name)
                    if known is not None:
                        item.earlier = [*known.earlier, known.summary()]
                    session.instances[server.id] = item
        items = [i for i in session.instances.values() if i.host in hosts]
        projects: dict[str, list[str]] = {}
        for item in items:
            projects.setdefault(item.project_id, []).append(item.instance_id)
        if projects:
            deadline = time.time() + self.reach.settings.reply_timeout
            await self.owners.ask(state, projects, deadline, round_key=",".join(sorted(hosts)))
            await self.save()
            await self._answers(list(projects))
        constraints = await self.reach.store.instances_by_ids([i.instance_id for i in items])
        groups = await self._groups(constraints.values())
        for item in items:
            c = constraints.get(item.instance_id)
            item.group_id = c.group_id if c is not None else item.group_id
            if item.action is None:
                asked = session.projects[item.project_id].instance_actions
                item.action = default_action(
                    asked, item.instance_id, c, self.reach.settings.default_instance_action
                )
        await self.save()
        self._checkpoint()
        self.drain.avoid = {h for h, p in session.host_progress.items() if p.state != HOST_RETURNED}
        failed = await self.drain.empty(items, constraints, groups)
        if failed:
            raise Stop(
                "not emptied: " + "; ".join(f"{i.instance_id}: {i.error}" for i in failed[:5])
            )
        for host in hosts:
            await self._wait_empty(host)

    async def _wait_empty(self, host: str) -> None:
        async def empty() -> bool:
            return not self.reach.servers_on(host)

        deadline = time.time() + self.reach.settings.move_timeout
        if not await wait_until(empty, deadline, self._event, self.reach.settings.step_interval):
            left = ", ".join(s.id for s in self.reach.servers_on(host)[:5])
            raise Stop(f"{host} still runs {left} after every move")

    async def _complete(self, final: str) -> None:
        session = self.session
        involved: dict[str, list[str]] = {p: [] for p in session.projects}
        for item in session.instances.values():
            involved.setdefault(item.project_id, []).append(item.instance_id)
        if involved:
            session.state = MAINTENANCE_COMPLETE
            deadline = time.time() + self.reach.settings.complete_wait
            await self.owners.ask(MAINTENANCE_COMPLETE, involved, deadline)
            await self.save()

            async def answered() -> bool:
                return not self.owners.pending(list(involved))

            await wait_until(answered, deadline, self._event, self.reach.settings.step_interval)
        session.state, session.ended, session.waiting = final, time.time(), None
        session.current_host = None
        session.note(final)
        await self.save()
