"""One execution in memory: its tasks, starting and resuming, its end, and the commands
from outside (pause, unpause, stop).

A `Run` is rebuilt from its stored records alone (`Run.resume`), so everything it
decides is written before it acts on it: a task's end, what it published and the tasks
it starts go into one commit, and only then do those tasks run. A finished task whose
successors are decided is marked `processed` and never looked at again; a finished one
that is not (the run was paused, or the process died between the two) is decided
again on resume, from the same records, to the same successors.

What follows a finished task (direct transitions, joins, engine commands; a reverse
workflow's requirements) is decided in `transitions`; the steps of one task (its
action calls, retries, with-items) are in `steps`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opendoctor.core.workflows import FINISHED, ActionExecution, Execution, TaskExecution
from opendoctor.workflow import transitions
from opendoctor.workflow.expressions import ExpressionError, Scope, evaluate
from opendoctor.workflow.spec import WorkflowSpec
from opendoctor.workflow.steps import TaskSteps

if TYPE_CHECKING:
    from opendoctor.workflow.engine import Engine

log = logging.getLogger(__name__)

UNFINISHED = frozenset({"IDLE", "WAITING", "RUNNING", "RUNNING_DELAYED", "PAUSED"})


def task_view(task: TaskExecution) -> dict[str, Any]:
    """What `task('name')` answers in an expression."""
    return {
        "id": task.id,
        "name": task.name,
        "state": task.state,
        "state_info": task.state_info,
        "result": task.result,
        "published": task.published,
    }


class Run:
    def __init__(self, engine: Engine, execution: Execution, spec: WorkflowSpec) -> None:
        self.engine = engine
        self.execution = execution
        self.spec = spec
        self.tasks: dict[str, TaskExecution] = {}
        # Each task's action executions by (attempt, item); those changed and not yet
        # written; and those found running when the run was taken up (their engine died).
        self.actions: dict[str, dict[tuple[int, int], ActionExecution]] = {}
        self.dirty: dict[str, list[ActionExecution]] = {}
        self.interrupted: set[str] = set()
        self.drivers: dict[str, asyncio.Task[None]] = {}
        self.unpaused = asyncio.Event()
        self.unpaused.set()
        self.ended = asyncio.get_running_loop().create_future()

    # --- scopes --------------------------------------------------------------------------

    def execution_view(self) -> dict[str, Any]:
        e = self.execution
        return {
            "id": e.id,
            "name": e.workflow_name,
            "workflow_name": e.workflow_name,
            "input": e.input,
            "params": e.params,
            "state": e.state,
            "created_at": e.created_at,
            "project_id": e.project_id,
        }

    def latest(self, name: str) -> TaskExecution | None:
        found = [t for t in self.tasks.values() if t.name == name]
        return max(found, key=lambda t: t.created_at) if found else None

    def scope(self, data: Any, current: TaskExecution | None = None) -> Scope:
        def task(name: str | None = None) -> dict[str, Any] | None:
            if name is None:
                return task_view(current) if current is not None else None
            found = self.latest(name)
            return task_view(found) if found is not None else None

        return Scope(
            data=data,
            task=task,
            execution=self.execution_view,
            env=self.execution.params.get("env") or {},
        )

    # --- starting and resuming -----------------------------------------------------------

    async def begin(self) -> None:
        """Start a new execution: its first tasks are stored with it, then run."""
        now = time.time()
        e = self.execution
        e.state, e.updated_at = "RUNNING", now
        started = [self.new_task(name, dict(e.context)) for name in transitions.first_tasks(self)]
        await self.engine.commit.write([e], started, self.prepared(started))
        if not started:
            await self.settle()
        for task in started:
            self.launch(task)

    async def resume(
        self, tasks: Iterable[TaskExecution], actions: Iterable[ActionExecution]
    ) -> None:
        """Go on from the stored records (after a restart, or taking over a dead engine)."""
        for task in tasks:
            self.tasks[task.id] = task
        for action in actions:
            if action.task_execution_id:
                by_key = self.actions.setdefault(action.task_execution_id, {})
                by_key[(action.attempt, action.index)] = action
                if action.state == "RUNNING":
                    self.interrupted.add(action.id)
        if self.execution.state == "IDLE":
            await self.begin()
            return
        if self.execution.state == "PAUSED":
            self.unpaused.clear()
        for task in list(self.tasks.values()):
            if task.state in ("RUNNING", "RUNNING_DELAYED", "PAUSED") or (
                task.state == "IDLE" and task.name in self.spec.tasks
            ):
                self.launch(task)
        if self.execution.state == "RUNNING":
            await self.decide_unprocessed()

    async def decide_unprocessed(self) -> None:
        finished = [t for t in self.tasks.values() if t.state in FINISHED and not t.processed]
        await self.advance(sorted(finished, key=lambda t: t.finished_at or 0.0))

    async def advance(self, finished: list[TaskExecution]) -> None:
        """Decide what follows these finished tasks, store their ends with the tasks they
        start (one commit), then start those."""
        started: list[TaskExecution] = []
        for task in finished:
            started += self.decide(task)
        transitions.wake_joins(self, started)
        self.check_bounds(started)
        self.check_end()
        actions = [a for t in finished for a in self.take_dirty(t)] + self.prepared(started)
        await self.engine.commit.write([self.execution], finished + started, actions)
        self.after_commit(started)

    # --- tasks ---------------------------------------------------------------------------

    def new_task(self, name: str, context: dict[str, Any], state: str = "RUNNING") -> TaskExecution:
        ts = self.spec.tasks[name]
        now = time.time()
        e = self.execution
        task = TaskExecution(
            execution_id=e.id,
            name=name,
            workflow_name=e.workflow_name,
            workflow_id=e.workflow_id,
            project_id=e.project_id,
            type="WORKFLOW" if ts.workflow else "ACTION",
            state=state,  # type: ignore[arg-type]
            in_context=context,
            created_at=now,
            updated_at=now,
            started_at=now if state == "RUNNING" else None,
        )
        task.runtime_context = TaskSteps.plan(self, task, ts)
        self.tasks[task.id] = task
        return task

    def prepared(self, tasks: list[TaskExecution]) -> list[ActionExecution]:
        """The action executions of tasks that call their action at once, stored with the
        task: one commit, not two, between a task's start and its action."""
        out = []
        for task in tasks:
            if task.state == "RUNNING":
                action = TaskSteps.prepare(self, task)
                if action is not None:
                    out.append(action)
        return out

    def launch(self, task: TaskExecution) -> None:
        if task.id in self.drivers or self.ended.done():
            return
        self.drivers[task.id] = asyncio.create_task(self.drive(task), name=f"wf-task-{task.name}")

    async def drive(self, task: TaskExecution) -> None:
        try:
            await TaskSteps(self, task).execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine fault must end the task, not leave it hanging
            log.exception("workflow task failed in the engine", extra={"task": task.id})
            task.state, task.state_info = "ERROR", f"engine error: {exc!r}"
            task.finished_at = task.updated_at = time.time()
        finally:
            self.drivers.pop(task.id, None)
        await self.task_done(task)

    async def task_done(self, task: TaskExecution) -> None:
        if self.ended.done():
            return
        if not self.unpaused.is_set():
            # Paused: the task's end is kept; what follows it is decided on resume.
            await self.engine.commit.write([], [task], self.take_dirty(task))
            return
        await self.advance([task])

    def check_bounds(self, started: list[TaskExecution]) -> None:
        """End a run whose transitions loop without end (a task that leads to itself with
        no wait): it would fill the database and hold a CPU for good."""
        most = self.engine.settings.max_tasks
        if len(self.tasks) > most:
            for task in started:
                task.state, task.state_info = "CANCELLED", "not started: too many tasks"
                task.processed = True
            self.fail(f"more than {most} task executions (workflow.max_tasks): a loop without end?")

    def decide(self, task: TaskExecution) -> list[TaskExecution]:
        """`transitions.decide`; an engine fault there ends the run, not leaves it hanging."""
        try:
            return transitions.decide(self, task)
        except Exception as exc:
            log.exception("workflow transitions failed in the engine", extra={"task": task.id})
            self.fail(f"engine error after task {task.name}: {exc!r}")
            return []

    def after_commit(self, started: list[TaskExecution]) -> None:
        if self.execution.state in FINISHED:
            self.end()
            return
        for task in started:
            if task.state == "RUNNING":
                self.launch(task)

    def mark_dirty(self, task: TaskExecution, action: ActionExecution) -> None:
        """`action` changed: it goes with the task's next write."""
        self.dirty.setdefault(task.id, []).append(action)

    def take_dirty(self, task: TaskExecution) -> list[ActionExecution]:
        """The action executions of `task` changed since they were last written."""
        return self.dirty.pop(task.id, [])

    # --- the end of a run ----------------------------------------------------------------

    def fail(self, reason: str) -> None:
        self.finish("ERROR", reason)

    def check_end(self) -> None:
        """End the run when nothing is left to do (called with every decision)."""
        if self.execution.state != "RUNNING":
            return
        live = [t for t in self.tasks.values() if t.state in UNFINISHED]
        if any(t.state != "WAITING" for t in live) or any(
            t.state in FINISHED and not t.processed for t in self.tasks.values()
        ):
            return
        for join in live:  # only joins that can no longer be satisfied are left
            missing = sorted(set(self.spec.inbound(join.name)) - set(join.runtime_context["join"]))
            join.state = "ERROR"
            join.state_info = f"join never satisfied: {', '.join(missing)} did not come"
            join.finished_at = join.updated_at = time.time()
        failed = [t for t in self.tasks.values() if t.state == "ERROR" and not self.handled(t)]
        if failed:
            names = ", ".join(sorted({t.name for t in failed}))
            info = "; ".join(f"{t.name}: {t.state_info}" for t in failed if t.state_info)
            self.finish("ERROR", f"failed tasks: {names}" + (f" ({info})" if info else ""))
        else:
            self.finish("SUCCESS", None)

    def handled(self, task: TaskExecution) -> bool:
        if self.spec.type == "reverse" or task.name not in self.spec.tasks:
            return False
        ts = self.spec.tasks[task.name]
        return bool(ts.on_error or ts.on_complete)

    def final_context(self) -> dict[str, Any]:
        context = dict(self.execution.context)
        # A failed task's `published` holds what its publish-on-error set.
        done = [t for t in self.tasks.values() if t.state in ("SUCCESS", "ERROR")]
        for task in sorted(done, key=lambda t: t.finished_at or 0.0):
            context |= task.published
        return context

    def finish(self, state: str, info: str | None) -> None:
        e = self.execution
        spec_output = self.spec.output if state == "SUCCESS" else self.spec.output_on_error
        context = self.final_context()
        try:
            output = evaluate(spec_output, self.scope(context)) if spec_output else {}
        except ExpressionError as exc:
            state, info, output = "ERROR", f"output failed: {exc}", {}
        e.output = output if isinstance(output, dict) else {"result": output}
        e.state, e.state_info = state, info  # type: ignore[assignment]
        e.updated_at = time.time()
        for task in self.tasks.values():
            if task.state in UNFINISHED:
                task.state, task.finished_at, task.updated_at = (
                    "CANCELLED",
                    e.updated_at,
                    e.updated_at,
                )
                task.processed = True

    def end(self) -> None:
        """The run is over and stored: stop what still runs and tell the engine."""
        if self.ended.done():
            return
        for driver in list(self.drivers.values()):
            driver.cancel()
        self.unpaused.set()
        self.ended.set_result(None)
        self.engine.ended(self)

    async def settle(self) -> None:
        self.check_end()
        await self.engine.commit.write([self.execution], list(self.tasks.values()))
        if self.execution.state in FINISHED:
            self.end()

    # --- commands from outside -----------------------------------------------------------

    async def pause(self, info: str | None = None) -> None:
        if self.execution.state != "RUNNING":
            return
        self.execution.state, self.execution.state_info = "PAUSED", info
        self.execution.updated_at = time.time()
        self.unpaused.clear()
        self.engine.announce(self.execution)
        await self.engine.commit.write([self.execution])

    async def unpause(self) -> None:
        if self.execution.state != "PAUSED":
            return
        self.execution.state, self.execution.state_info = "RUNNING", None
        self.execution.updated_at = time.time()
        self.unpaused.set()
        await self.decide_unprocessed()

    async def stop(self, state: str, info: str | None) -> None:
        """Cancel or fail the run from outside (an operator): running tasks are cancelled."""
        if self.execution.state in FINISHED:
            return
        actions = [a for by_key in self.actions.values() for a in by_key.values()]
        actions = [a for a in actions if a.state == "RUNNING"]
        for action in actions:
            action.state, action.updated_at = "CANCELLED", time.time()
        self.finish(state, info)
        await self.engine.commit.write([self.execution], list(self.tasks.values()), actions)
        self.end()
