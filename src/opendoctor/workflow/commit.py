"""Group commit: every run's state changes, written together in one transaction.

A workflow moves only once what it did is stored: a task's end and the tasks it starts
are written before any of them runs, so a restart never runs a finished task again. A
transaction per step would cap the engine at the database's commits per second (and on
SQLite one writer at a time); instead every change asked for while a transaction is in
flight rides in the next one, and each writer waits for the commit that holds its
change. Under load a commit carries hundreds of records; alone, a step waits for one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from opendoctor.core.workflows import ActionExecution, Execution, TaskExecution
from opendoctor.infra import metrics
from opendoctor.store.workflows import RunWrites, WorkflowStore

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self._executions: dict[str, Execution] = {}
        self._tasks: dict[str, TaskExecution] = {}
        self._actions: dict[str, ActionExecution] = {}
        self._done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        self.records = 0

    async def write(
        self,
        executions: tuple[Execution, ...] | list[Execution] = (),
        tasks: tuple[TaskExecution, ...] | list[TaskExecution] = (),
        actions: tuple[ActionExecution, ...] | list[ActionExecution] = (),
    ) -> None:
        """Return once these records, as they are now or later, are committed."""
        # Copies, taken now: the engine goes on changing its records while a commit is
        # in flight, and a commit must hold a task's end together with what it started,
        # never a later state without the records that state relies on. Kept by id: a
        # record written twice before a commit is stored once, in its latest state.
        for e in executions:
            self._executions[e.id] = replace(e, output=dict(e.output))
        for t in tasks:
            self._tasks[t.id] = replace(
                t, runtime_context=dict(t.runtime_context), published=dict(t.published)
            )
        for a in actions:
            self._actions[a.id] = replace(a)
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        done = self._done
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="workflow-commit")
        await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            while self._done is not None:
                writes = RunWrites(
                    list(self._executions.values()),
                    list(self._tasks.values()),
                    list(self._actions.values()),
                )
                done, self._done = self._done, None
                self._executions, self._tasks, self._actions = {}, {}, {}
                began = time.perf_counter()
                try:
                    await self.store.write(writes)
                except Exception as exc:
                    # Every writer of this batch hears of it; none goes on as if stored.
                    log.warning("workflow state not stored", extra={"error": repr(exc)})
                    done.set_exception(exc)
                    done.exception()  # a writer that was cancelled must not warn on it
                    continue
                self.commits += 1
                count = len(writes.executions) + len(writes.tasks) + len(writes.actions)
                self.records += count
                metrics.WORKFLOW_COMMIT.observe(time.perf_counter() - began)
                metrics.WORKFLOW_COMMIT_RECORDS.observe(count)
                done.set_result(None)
        finally:
            self._flusher = None

    async def close(self) -> None:
        """Wait for what is queued to be written."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
