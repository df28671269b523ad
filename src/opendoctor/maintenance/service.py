"""What the API asks of planned maintenance: sessions started, read, paused, cancelled;
the owners' answers; their constraints. The work itself is `engine.Engine`'s."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, Protocol

from opendoctor.core.errors import RequestError
from opendoctor.core.maintenance import (
    ENDED,
    INSTANCE_ACTIONS,
    MAINTENANCE,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    HostProgress,
    InstanceConstraints,
    InstanceGroupConstraints,
    Session,
)
from opendoctor.core.maintenance_settings import MaintenanceSettings
from opendoctor.core.model import Host, Server
from opendoctor.store.maintenance import MaintenanceStore

AdminAction = Literal["pause", "resume"]
# Fenix's workflows by name; only the default one is built here.
WORKFLOWS = ("default",)
HOST_ACTION_PLUGINS = ("power_cycle", "dummy", "workflow")


class Runner(Protocol):
    """The engine, as the service hands it sessions and the changes owners and admins
    make to them (`engine.Engine`)."""

    def launch(self, session: Session) -> None: ...

    async def update(self, session_id: str, change: Callable[[Session], None]) -> Session | None:
        """Apply `change` to the session's record where it runs, save it, wake it."""

    async def current(self, session_id: str) -> Session | None: ...


class Maintenance:
    def __init__(
        self,
        store: MaintenanceStore,
        settings: MaintenanceSettings,
        hosts: Callable[[], Mapping[str, Host]],
        servers: Callable[[], Mapping[str, Server]],
        runner: Runner,
    ) -> None:
        self.store = store
        self.settings = settings
        self._hosts = hosts
        self._servers = servers
        self.runner = runner

    # -- sessions ------------------------------------------------------------------------

    async def create(
        self,
        hosts: list[str],
        maintenance_at: float | None,
        workflow: str = "default",
        metadata: dict[str, Any] | None = None,
        actions: list[dict[str, Any]] | None = None,
    ) -> Session:
        """Start a session over `hosts` (empty: every host the VIM has)."""
        known = self._hosts()
        if workflow not in WORKFLOWS:
            raise RequestError(
                400, f"unknown workflow {workflow!r}; known: {', '.join(WORKFLOWS)}", "workflow"
            )
        if len(hosts) > self.settings.max_hosts:
            raise RequestError(400, f"more than {self.settings.max_hosts} hosts", "hosts")
        unknown = [h for h in hosts if h not in known]
        if unknown:
            raise RequestError(400, f"unknown hosts: {', '.join(sorted(unknown))}", "hosts")
        chosen = list(dict.fromkeys(hosts)) or sorted(known)
        if not chosen:
            raise RequestError(400, "the VIM has no hosts to maintain", "hosts")
        for i, action in enumerate(actions or []):
            plugin = action.get("plugin")
            if plugin not in HOST_ACTION_PLUGINS:
                raise RequestError(
                    400,
                    f"unknown plugin {plugin!r}; known: {', '.join(HOST_ACTION_PLUGINS)}",
                    f"actions[{i}].plugin",
                )
            if plugin == "workflow" and not (action.get("metadata") or {}).get("workflow"):
                raise RequestError(
                    400, "a workflow action names its workflow", f"actions[{i}].metadata.workflow"
                )
        parallel = (metadata or {}).get("max_parallel_hosts")
        if parallel is not None and (
            not isinstance(parallel, int) or isinstance(parallel, bool) or not 1 <= parallel <= 100
        ):
            raise RequestError(
                400, "an integer from 1 to 100 (hosts taken out at once)",
                "metadata.max_parallel_hosts",
            )  # fmt: skip
        running = await self.store.active()
        if len(running) >= self.settings.max_sessions:
            raise RequestError(
                409, f"{len(running)} sessions are running (maintenance.max_sessions)", "hosts"
            )
        busy = sorted({h for s in running for h in s.hosts} & set(chosen))
        if busy:
            raise RequestError(
                409, f"hosts already in a running session: {', '.join(busy)}", "hosts"
            )
        session = Session(
            hosts=chosen,
            maintenance_at=time.time() if maintenance_at is None else maintenance_at,
            workflow=workflow,
            metadata=dict(metadata or {}),
            actions=list(actions or []),
            host_progress={h: HostProgress(h, version_before=known[h].version) for h in chosen},
        )
        session.note(f"session created over {len(chosen)} hosts")
        await self.store.add(session)
        self.runner.launch(session)
        return session

    async def sessions(self, active: bool | None = None, limit: int = 200) -> list[Session]:
        return await self.store.sessions(limit=limit, active=active)

    async def get(self, session_id: str) -> Session:
        session = await self.runner.current(session_id)
        if session is None:
            raise RequestError(404, f"no maintenance session {session_id}", "session_id")
        return session

    async def admin_action(self, session_id: str, action: AdminAction) -> Session:
        await self._running(session_id)

        def change(session: Session) -> None:
            session.paused = action == "pause"
            session.note(f"{action}d by the admin")

        return await self._update(session_id, change)

    async def _update(self, session_id: str, change: Callable[[Session], None]) -> Session:
        session = await self.runner.update(session_id, change)
        if session is None:
            raise RequestError(404, f"no maintenance session {session_id}", "session_id")
        return session

    async def cancel(self, session_id: str) -> Session:
        """Ask the session to stop at its next safe point (an instance being moved is
        moved to the end; a host already emptied is put back in service)."""
        session = await self._running(session_id)
        if session.cancel_requested:
            return session

        def change(session: Session) -> None:
            session.cancel_requested = True
            session.note("cancel requested")

        return await self._update(session_id, change)

    async def _running(self, session_id: str) -> Session:
        session = await self.get(session_id)
        if session.state in ENDED:
            raise RequestError(
                409, f"session {session_id} has ended ({session.state})", "session_id"
            )
        return session

    # -- the owners ----------------------------------------------------------------------

    async def project_instances(self, session_id: str, project_id: str) -> list[str]:
        """The project's instances the last notice was about (those of the host being
        emptied); before any, those on the session's hosts now, or moved by it."""
        session = await self.get(session_id)
        progress = session.projects.get(project_id)
        if progress is not None and progress.about:
            return list(progress.about)
        hosts = set(session.hosts)
        now = [
            s.id for s in self._servers().values() if s.project_id == project_id and s.host in hosts
        ]
        moved = [i.instance_id for i in session.instances.values() if i.project_id == project_id]
        return list(dict.fromkeys([*now, *moved]))

    async def project_reply(
        self,
        session_id: str,
        project_id: str,
        state: str,
        instance_ids: list[str] | None = None,
        instance_actions: dict[str, str] | None = None,
    ) -> Session:
        """An owner's answer (`ACK_<state>` or `NACK_<state>`) to what it was asked."""
        # Doctor's sample application manager names SCALE_IN by its older name.
        state = state.replace("DOWN_SCALE", "SCALE_IN")
        session = await self._running(session_id)
        progress = session.projects.get(project_id)
        if progress is None or progress.asked is None:
            raise RequestError(
                409, f"project {project_id} was not asked anything in this session", "state"
            )
        wanted = (f"ACK_{progress.asked}", f"NACK_{progress.asked}")
        if state not in wanted:
            raise RequestError(
                409,
                f"the project was asked {progress.asked}: answer one of {', '.join(wanted)}",
                "state",
            )
        actions = dict(instance_actions or {})
        if actions:
            if progress.asked not in (PREPARE_MAINTENANCE, PLANNED_MAINTENANCE):
                raise RequestError(
                    400,
                    "instance_actions answer PREPARE_MAINTENANCE or PLANNED_MAINTENANCE, "
                    f"not {progress.asked}",
                    "instance_actions",
                )
            mine = set(await self.project_instances(session_id, project_id))
            for instance_id, action in actions.items():
                if instance_id not in mine:
                    raise RequestError(
                        400,
                        f"instance {instance_id} is not the project's in this session",
                        f"instance_actions.{instance_id}",
                    )
                if action not in INSTANCE_ACTIONS:
                    raise RequestError(
                        400,
                        f"unknown action {action!r}; one of {', '.join(INSTANCE_ACTIONS)}",
                        f"instance_actions.{instance_id}",
                    )
        asked = progress.asked

        def change(session: Session) -> None:
            mine = session.projects[project_id]
            if mine.asked != asked:
                return  # asked something else meanwhile: this answer is stale
            mine.reply, mine.replied_at = state, time.time()
            mine.instance_actions.update(actions)
            if asked == MAINTENANCE and instance_ids is not None:
                mine.instance_ids = list(instance_ids)
            session.note(f"project {project_id} answered {state}")

        return await self._update(session_id, change)

    # -- constraints ---------------------------------------------------------------------

    async def put_group(self, group: InstanceGroupConstraints) -> InstanceGroupConstraints:
        group.updated = time.time()
        await self.store.put_group(group)
        return group

    async def get_group(self, group_id: str) -> InstanceGroupConstraints:
        group = await self.store.get_group(group_id)
        if group is None:
            raise RequestError(404, f"no constraints for instance group {group_id}", "group_id")
        return group

    async def delete_group(self, group_id: str) -> None:
        if not await self.store.delete_group(group_id):
            raise RequestError(404, f"no constraints for instance group {group_id}", "group_id")

    async def put_instance(self, instance: InstanceConstraints) -> InstanceConstraints:
        instance.updated = time.time()
        await self.store.put_instance(instance)
        return instance

    async def get_instance(self, instance_id: str) -> InstanceConstraints:
        instance = await self.store.get_instance(instance_id)
        if instance is None:
            raise RequestError(404, f"no constraints for instance {instance_id}", "instance_id")
        return instance

    async def delete_instance(self, instance_id: str) -> None:
        if not await self.store.delete_instance(instance_id):
            raise RequestError(404, f"no constraints for instance {instance_id}", "instance_id")

    async def constraints_for(self, ids: Collection[str]) -> dict[str, InstanceConstraints]:
        return await self.store.instances_by_ids(ids)
