"""The workflow engine in a process: what its actions reach (the VIM, HTTP under the
notifications' egress policy, fencing, the alarms) and its start and stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opendoctor.core.model import NotificationEvent
from opendoctor.core.ports import NotifyTarget, VimDriver
from opendoctor.core.settings import Settings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.live import Hub
from opendoctor.inspector.inspector import Recover, RecoverServer
from opendoctor.recovery.fencing import Fencing
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.workflows import WorkflowStore
from opendoctor.workflow.actions import Toolbox, builtin_actions
from opendoctor.workflow.engine import Engine
from opendoctor.workflow.recovery_runs import RecoveryByWorkflow
from opendoctor.workflow.service import TemplateWorkflows, Workflows

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class Notify:
    """The `notify` action: an event of the workflow's making, to the alarms it matches."""

    def __init__(self, target: NotifyTarget) -> None:
        self.target = target

    async def __call__(self, event_type: str, traits: dict[str, Any]) -> int:
        event = NotificationEvent.build(event_type, **traits)
        sent = await self.target.notify_many([([event], {"event_type": event_type})])
        await self.target.landed(sent)
        return len(sent)


class WorkflowPart:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        http: HttpClient,
        vim: Callable[[], VimDriver],
        notify: NotifyTarget,
        live: Hub | None = None,
    ) -> None:
        self.settings = settings
        self.store = WorkflowStore(db)
        self._live = live
        self._vim = vim
        self._http = http
        self._notify = notify
        self._db = db
        self.fencing: Fencing | None = None
        self.engine: Engine | None = None
        self.workflows: Workflows | None = None

    def build(self, fencing: Fencing | None) -> TemplateWorkflows:
        self.fencing = fencing
        toolbox = Toolbox(
            vim=self._vim(), http=self._http, fence=self._fence, notify=Notify(self._notify)
        )
        self.engine = Engine(
            self.store,
            LeaseStore(self._db),
            builtin_actions(toolbox),
            self.settings.workflow,
            single_process=self._db.engine.dialect.name == "sqlite",
            live=self._live,
        )
        self.workflows = Workflows(self.store, self.engine)
        return TemplateWorkflows(self.workflows)

    def recovery(
        self, host: Recover | None, server: RecoverServer | None
    ) -> tuple[Recover | None, RecoverServer | None]:
        """The recovery the inspector runs: the built-in steps given, or the workflows
        `recovery.host_workflow` and `recovery.vm.workflow` name in their place."""
        settings = self.settings.recovery
        assert self.workflows is not None
        by_workflow = RecoveryByWorkflow(
            self.workflows, settings.host_workflow, settings.vm.workflow
        )
        if host is not None and settings.host_workflow:
            host = by_workflow.host
        if server is not None and settings.vm.workflow:
            server = by_workflow.server
        return host, server

    async def _fence(self, host: str) -> None:
        if self.fencing is None:
            raise LookupError("no fencing is configured (recovery.enabled is off)")
        await self.fencing.fence(host)

    async def start(self) -> None:
        if self.engine is None or self.workflows is None:
            self.build(self.fencing)
        assert self.engine is not None and self.workflows is not None
        if self.settings.workflow.builtin:
            await self.workflows.add_builtin()
        await self.engine.start()

    async def stop(self) -> None:
        if self.engine is not None and self.engine.started:
            await self.engine.stop()
