"""A workflow engine on a real database, with actions a test can watch and hold.

`Bed.crash()` drops an engine the way `kill -9` would as far as the database can tell:
its tasks stop mid-step, nothing more is written, its lease is left to lapse; the next
engine on the same database resumes what it left.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server
from opendoctor.core.workflow_settings import WorkflowSettings
from opendoctor.core.workflows import FINISHED, Execution, TaskExecution
from opendoctor.infra.httpclient import HttpClient
from opendoctor.store.db import Database
from opendoctor.store.leases import LeaseStore
from opendoctor.store.workflows import WorkflowStore
from opendoctor.workflow.actions import (
    ActionContext,
    ActionDef,
    ActionError,
    Param,
    Toolbox,
    builtin_actions,
)
from opendoctor.workflow.engine import Engine
from opendoctor.workflow.service import Workflows
from tests.conftest import eventually


@asynccontextmanager
async def bed_on(url: str, http: HttpClient | None = None) -> AsyncIterator[Bed]:
    """A started bed on the (empty) database at `url`; its engines stopped afterwards."""
    db = Database(url)
    await db.migrate()
    bed = Bed(db, http=http)
    await bed.start()
    try:
        yield bed
    finally:
        await bed.close()
        await db.close()


def lab_vim() -> MemoryVim:
    hosts = [Host(name=f"compute{i}", address=f"127.0.0.{i}") for i in (1, 2, 3)]
    servers = [
        Server(id=f"vm{i}", name=f"vm{i}", host="compute1", project_id="p1", status="ACTIVE")
        for i in (1, 2, 3)
    ]
    return MemoryVim(hosts, servers)


class Bed:
    def __init__(
        self, db: Database, vim: MemoryVim | None = None, http: HttpClient | None = None
    ) -> None:
        self.db = db
        self.vim = vim or lab_vim()
        self.http = http
        self.store = WorkflowStore(db)
        self.calls: Counter[str] = Counter()
        self.running = 0
        self.most_at_once = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: Counter[str] = Counter()
        self.engines: list[Engine] = []
        self.engine = self.new_engine()
        self.workflows = Workflows(self.store, self.engine)

    def new_engine(self) -> Engine:
        registry = builtin_actions(Toolbox(vim=self.vim, http=self.http))
        for d in self._test_actions():
            registry.add(d)
        engine = Engine(
            self.store,
            LeaseStore(self.db),
            registry,
            WorkflowSettings(engine_ttl=2.0, takeover_interval=0.2),
            single_process=self.db.engine.dialect.name == "sqlite",
        )
        self.engines.append(engine)
        return engine

    def _test_actions(self) -> list[ActionDef]:
        async def count(given: dict[str, Any], ctx: ActionContext) -> Any:
            key = str(given.get("key", ""))
            self.calls[key] += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            try:
                gate = self.gates.get(key)
                if gate is not None:
                    await gate.wait()
                else:
                    await asyncio.sleep(0)
            finally:
                self.running -= 1
            if self.failures[key] > 0:
                self.failures[key] -= 1
                raise ActionError(f"{key} failed", {"key": key, "left": self.failures[key]})
            return given.get("value", key)

        params = (Param("key", True), Param("value"))
        return [
            ActionDef("test.count", params, count, "counts its calls by key"),
            ActionDef("test.read", params, count, "counts, and may run again", safe=True),
        ]

    async def start(self) -> None:
        await self.engine.start()

    async def add(self, text: str, project: str = "p1") -> None:
        await self.workflows.add(text, project)

    async def run(self, name: str, given: dict[str, Any] | None = None, **kw: Any) -> Execution:
        """Start `name` and return its execution once it has ended (stored)."""
        started = await self.workflows.start(name, given or {}, "p1", **kw)
        return await self.finished(started.id)

    async def finished(self, execution_id: str, timeout: float = 10.0) -> Execution:
        async def ended() -> Execution | None:
            found = await self.store.execution(execution_id)
            return found if found is not None and found.state in FINISHED else None

        return await eventually(ended, timeout, f"execution {execution_id} to end")

    async def state(self, execution_id: str, state: str) -> Execution:
        async def reached() -> Execution | None:
            found = await self.store.execution(execution_id)
            return found if found is not None and found.state == state else None

        return await eventually(reached, 10.0, f"execution {execution_id} to be {state}")

    async def tasks(self, execution_id: str) -> dict[str, TaskExecution]:
        """The execution's tasks by name (the latest of each name)."""
        found = await self.store.tasks(None, 1000, execution_id=execution_id)
        return {t.name: t for t in sorted(found, key=lambda t: t.created_at)}

    async def crash(self) -> None:
        """Stop the engine without a goodbye, then start another on the same database."""
        old = self.engine
        old.started = False
        await old._background.close()
        for run in list(old.runs.values()):
            for driver in list(run.drivers.values()):
                driver.cancel()
        old.runs.clear()
        # What was queued and not committed is lost, as in a crash.
        if old.commit._flusher is not None:
            old.commit._flusher.cancel()
        self.engine = self.new_engine()
        self.workflows = Workflows(self.store, self.engine)
        await self.engine.start()

    async def close(self) -> None:
        for engine in self.engines:
            if engine.started:
                await engine.stop()


# A chain whose middle task can be held (`gates["two"]`); SAFE is its safe-rerun.
CHAIN = """
version: '2.0'
chain:
  tasks:
    one:
      action: test.count key=one
      on-success: [two]
    two:
      action: test.count key=two
      safe-rerun: SAFE
      on-success: [three]
    three:
      action: test.count key=three
"""
