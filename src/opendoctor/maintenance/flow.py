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

from opendoctor.core.maintenance import (
    HOST_DRAINING,
    HOST_FAILED,
    HOST_IN_MAINTENANCE,
    HOST_RETURNED,
    IN_MAINTENANCE,
    MAINTENANCE,
    MAINTENANCE_CANCELLED,
    MAINTENANCE_COMPLETE,
    MAINTENANCE_DONE,
    MAINTENANCE_FAILED,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    START_MAINTENANCE,
    InstanceProgress,
    Session,
)
from opendoctor.core.ports import VimError
from opendoctor.maintenance.drain import Drain, default_action
from opendoctor.maintenance.owners import Owners
from opendoctor.maintenance.reach import Reach, Saver, Stop, Waker, wait_until

log = logging.getLogger(__name__)


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
            if session.state in (MAINTENANCE, PREPARE_MAINTENANCE, START_MAINTENANCE,
                                 PLANNED_MAINTENANCE):  # fmt: skip
                await self._hosts()
            await self._complete(MAINTENANCE_DONE)
        except Cancelled:
            await self._back_in_service()
            await self._complete(MAINTENANCE_CANCELLED)
        except Stop as exc:
            session.error = str(exc)
            session.note(f"failed: {exc}")
            log.error(
                "maintenance session failed",
                extra={"session": session.session_id, "error": str(exc)},
            )
            await self._back_in_service()
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
                faulted = self.reach.faulted_hosts() - set(session.hosts)
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

    async def _hosts(self) -> None:
        session = self.session
        while True:
            await self._held()
            left = [h for h, p in session.host_progress.items() if p.state != HOST_RETURNED]
            if not left:
                return
            # The host being worked on first (after a restart), then the emptiest.
            left.sort(key=lambda h: (session.host_progress[h].state == "waiting",
                                     len(self.reach.servers_on(h))))  # fmt: skip
            await self._one_host(left[0])

    async def _one_host(self, host: str) -> None:
        session = self.session
        progress = session.host_progress[host]
        session.current_host = host
        if progress.started is None:
            progress.started = time.time()
        if progress.state != HOST_IN_MAINTENANCE:
            first = not any(p.state == HOST_RETURNED for p in session.host_progress.values())
            session.state = PREPARE_MAINTENANCE if first else PLANNED_MAINTENANCE
            progress.state = HOST_DRAINING
            await self._set_enabled(host, False)
            session.note(f"{host}: disabled, to be emptied")
            await self.save()
            await self._empty(host, session.state)
        session.state = START_MAINTENANCE
        await self._maintain(host)

    async def _empty(self, host: str, state: str) -> None:
        session = self.session
        servers = self.reach.servers_on(host)
        for server in servers:
            if server.id not in session.instances:
                session.instances[server.id] = InstanceProgress(
                    server.id, server.project_id, host, name=server.name
                )
        items = [i for i in session.instances.values() if i.host == host]
        projects: dict[str, list[str]] = {}
        for item in items:
            projects.setdefault(item.project_id, []).append(item.instance_id)
        if projects:
            deadline = time.time() + self.reach.settings.reply_timeout
            await self.owners.ask(state, projects, deadline, round_key=host)
            await self.save()
            await self._answers(list(projects))
        store = self.reach.store
        constraints = await store.instances_by_ids([i.instance_id for i in items])
        groups = {}
        for item in items:
            c = constraints.get(item.instance_id)
            item.group_id = c.group_id if c is not None else item.group_id
            if item.group_id and item.group_id not in groups:
                group = await store.get_group(item.group_id)
                if group is not None:
                    groups[item.group_id] = group
            if item.action is None:
                asked = session.projects[item.project_id].instance_actions
                item.action = default_action(
                    asked, item.instance_id, c, self.reach.settings.default_instance_action
                )
        await self.save()
        self._checkpoint()
        failed = await self.drain.empty(host, items, constraints, groups)
        if failed:
            raise Stop(
                f"{host} not emptied: "
                + "; ".join(f"{i.instance_id}: {i.error}" for i in failed[:5])
            )
        await self._wait_empty(host)

    async def _wait_empty(self, host: str) -> None:
        async def empty() -> bool:
            return not self.reach.servers_on(host)

        deadline = time.time() + self.reach.settings.move_timeout
        if not await wait_until(empty, deadline, self._event, self.reach.settings.step_interval):
            left = ", ".join(s.id for s in self.reach.servers_on(host)[:5])
            raise Stop(f"{host} still runs {left} after every move")

    async def _maintain(self, host: str) -> None:
        session = self.session
        progress = session.host_progress[host]
        progress.state = HOST_IN_MAINTENANCE
        self.reach.mark(host, True)
        session.note(f"{host}: in maintenance")
        await self.save()
        await self.owners.host_notice(host, IN_MAINTENANCE)
        actions = session.actions or [self._default_action()]
        try:
            for action in actions:
                plugin = str(action.get("plugin"))
                maintainer = self.reach.maintainers.get(plugin)
                if maintainer is None:
                    raise Stop(f"no host action {plugin!r} here")
                metadata = dict(action.get("metadata") or {})
                await maintainer.maintain(host, metadata)
            await self._back_up(host)
        except Stop:
            progress.state, progress.error = HOST_FAILED, session.error
            raise
        except Exception as exc:
            progress.state, progress.error = HOST_FAILED, f"{exc.__class__.__name__}: {exc}"
            raise Stop(f"{host}: maintenance failed: {progress.error}") from exc
        await self._set_enabled(host, True)
        self.reach.mark(host, False)
        known = self.reach.hosts().get(host)
        progress.version_after = known.version if known is not None else None
        progress.state, progress.finished = HOST_RETURNED, time.time()
        session.current_host = None
        session.note(f"{host}: back in service")
        await self.save()
        await self.owners.host_notice(host, MAINTENANCE_COMPLETE)

    def _default_action(self) -> dict[str, object]:
        name = self.reach.settings.default_host_action
        if name.startswith("workflow:"):
            return {"plugin": "workflow", "metadata": {"workflow": name.split(":", 1)[1]}}
        return {"plugin": name, "metadata": {}}

    async def _back_up(self, host: str) -> None:
        """The VIM has the host up again (it may have been powered off and on)."""

        async def up() -> bool:
            try:
                hosts = {h.name: h for h in await self.reach.vim().list_hosts()}
            except VimError:
                return False
            known = hosts.get(host)
            return known is not None and known.state == "up" and not known.forced_down

        deadline = time.time() + self.reach.settings.host_timeout
        if not await wait_until(up, deadline, self._event, self.reach.settings.step_interval):
            raise Stop(f"{host} not back up after {self.reach.settings.host_timeout:.0f} s")

    async def _set_enabled(self, host: str, enabled: bool) -> None:
        try:
            await self.reach.vim().set_host_enabled(host, enabled)
        except VimError as exc:
            raise Stop(
                f"the VIM did not {'enable' if enabled else 'disable'} {host}: {exc}"
            ) from exc

    async def _back_in_service(self) -> None:
        """After a cancel or a failure: a host taken out and not maintained goes back."""
        for host, progress in self.session.host_progress.items():
            if progress.state in (HOST_DRAINING, HOST_IN_MAINTENANCE, HOST_FAILED):
                self.reach.mark(host, False)
                try:
                    await self.reach.vim().set_host_enabled(host, True)
                except VimError as exc:
                    self.session.note(f"{host}: could not be enabled again: {exc}")
                if progress.state == HOST_DRAINING:
                    progress.state = "waiting"

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
