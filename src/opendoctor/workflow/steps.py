"""One task's life: wait-before, pause-before, its action (per item, per attempt),
wait-after, timeout, publish.

Every wait is an instant written in the task's `runtime_context` before the wait starts
(`wait_before_due`, `retry_due`, `wait_after_due`, `timeout_at`) and every action call
is an action execution stored before the call: a task taken up again after a restart
waits only what is left, skips the items and attempts that finished, and calls again
only actions that are safe to repeat (reads, or a task marked `safe-rerun`). An action
interrupted that is not safe to repeat ends in ERROR ("interrupted"): it may or may not
have had its effect, and an operator must not find it done twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from opendoctor.core.workflows import ActionExecution, TaskExecution
from opendoctor.workflow.actions import TIMER_ACTIONS, ActionContext, ActionError, privileged
from opendoctor.workflow.expressions import ExpressionError, evaluate
from opendoctor.workflow.spec import TaskSpec
from opendoctor.workflow.std_actions import timer_seconds

if TYPE_CHECKING:
    from opendoctor.workflow.run import Run

# How much of a failed action's result a task's state_info repeats.
_INFO_MAX = 1000


def seconds(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExpressionError(f"{what} must be a number of seconds, not {value!r}") from None
    if not 0 <= number <= 86_400 * 7:
        raise ExpressionError(f"{what} must be between 0 and 604800 seconds, not {number}")
    return number


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", "false", "False")


class Outcome:
    __slots__ = ("info", "ok", "result")

    def __init__(self, ok: bool, result: Any, info: str | None = None) -> None:
        self.ok, self.result, self.info = ok, result, info


class TaskSteps:
    def __init__(self, run: Run, task: TaskExecution) -> None:
        self.run = run
        self.task = task
        self.spec = run.spec.tasks[task.name]

    # --- decided when the task is created ------------------------------------------------

    @staticmethod
    def plan(run: Run, task: TaskExecution, ts: TaskSpec) -> dict[str, Any]:
        """The instants the task's waits end, fixed (and stored) when it is created."""
        now = time.time()
        rc: dict[str, Any] = {}
        scope = run.scope(task.in_context, task)
        try:
            if ts.timeout is not None:
                rc["timeout_at"] = now + seconds(evaluate(ts.timeout, scope), "timeout")
            if ts.wait_before is not None:
                wait = seconds(evaluate(ts.wait_before, scope), "wait-before")
                if wait > 0:
                    rc["wait_before_due"] = now + wait
        except ExpressionError as exc:
            rc["error"] = str(exc)
        return rc

    @staticmethod
    def prepare(run: Run, task: TaskExecution) -> ActionExecution | None:
        """The action execution of a task that calls one action at once, if it is one."""
        ts = run.spec.tasks[task.name]
        rc = task.runtime_context
        if (
            ts.workflow
            or ts.with_items
            or ts.pause_before
            or "error" in rc
            or "wait_before_due" in rc
            or run.engine.registry.get(ts.action or "std.noop") is None
        ):
            return None
        try:
            given = evaluate(ts.input, run.scope(task.in_context, task))
        except ExpressionError:
            return None  # the task's own run reports it
        return TaskSteps(run, task).new_action(0, 0, given)

    # --- the task's run ------------------------------------------------------------------

    async def execute(self) -> None:
        rc = self.task.runtime_context
        if "error" in rc:
            self.complete(Outcome(False, rc["error"], rc["error"]))
            return
        deadline = rc.get("timeout_at")
        if deadline is None:
            await self.body()
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())) as limit:
                await self.body()
        except TimeoutError:
            if not limit.expired():
                raise
            text = f"timed out after {self.spec.timeout} s"
            for action in self.run.actions.get(self.task.id, {}).values():
                if action.state == "RUNNING":
                    action.state, action.state_info = "ERROR", text
                    action.updated_at = time.time()
                    self.run.mark_dirty(self.task, action)
            self.complete(Outcome(False, text, text))

    async def body(self) -> None:
        ts, task = self.spec, self.task
        if "wait_before_due" in task.runtime_context and not task.runtime_context.get("waited"):
            await self.delay(task.runtime_context["wait_before_due"])
            self.note(waited=True)
        if ts.pause_before and not task.runtime_context.get("unpaused"):
            if _truthy(self.evaluate(ts.pause_before)):
                await self.run_paused()
            self.note(unpaused=True)
        if "after" not in task.runtime_context:
            outcome = await self.attempts()
            if ts.wait_after is None:
                self.complete(outcome)
                return
            wait = seconds(self.evaluate(ts.wait_after), "wait-after")
            task.result = outcome.result
            self.note(after=[outcome.ok, outcome.info], wait_after_due=time.time() + wait)
        else:
            ok, info = task.runtime_context["after"]
            outcome = Outcome(ok, task.result, info)
        await self.delay(task.runtime_context["wait_after_due"])
        self.complete(outcome)

    async def attempts(self) -> Outcome:
        retry = self.spec.retry
        attempt = int(self.task.runtime_context.get("attempt", 0))
        while True:
            due = self.task.runtime_context.get("retry_due")
            if due is not None:
                await self.delay(due)
                self.note(retry_due=None)
            outcome = await self.once(attempt)
            if retry is None:
                return outcome
            self.task.result = outcome.result
            try:
                count = int(self.evaluate(retry.count))
                if outcome.ok:
                    again = retry.continue_on is not None and _truthy(
                        self.evaluate(retry.continue_on)
                    )
                else:
                    again = retry.break_on is None or not _truthy(self.evaluate(retry.break_on))
                delay = seconds(self.evaluate(retry.delay), "retry delay")
            except (ExpressionError, TypeError, ValueError) as exc:
                return Outcome(False, str(exc), f"retry: {exc}")
            if not again or attempt >= count:
                return outcome
            attempt += 1
            self.note(attempt=attempt, retry_due=time.time() + delay)

    async def once(self, attempt: int) -> Outcome:
        await self.run.unpaused.wait()
        if self.spec.workflow:
            if self.spec.with_items:
                text = "with-items over a sub-workflow is not supported"
                return Outcome(False, text, text)
            return await self.child()
        if not self.spec.with_items:
            return await self.call(attempt, 0, {})
        try:
            lists = [(n, self.evaluate(expr)) for n, expr in self.spec.with_items]
            for name, values in lists:
                if not isinstance(values, list):
                    raise ExpressionError(f"with-items {name}: not a list but {values!r}")
            if len({len(v) for _, v in lists}) > 1:
                raise ExpressionError("with-items: the lists are not of one length")
            width = int(self.evaluate(self.spec.concurrency) or 0)
        except (ExpressionError, TypeError, ValueError) as exc:
            return Outcome(False, str(exc), str(exc))
        count = len(lists[0][1])
        gate = asyncio.Semaphore(width if width > 0 else max(count, 1))

        async def item(i: int) -> Outcome:
            async with gate:
                return await self.call(attempt, i, {n: v[i] for n, v in lists}, durable=True)

        done = await asyncio.gather(*(item(i) for i in range(count)))
        failed = [o for o in done if not o.ok]
        info = failed[0].info if failed else None
        return Outcome(not failed, [o.result for o in done], info)

    # --- one action ----------------------------------------------------------------------

    def new_action(self, attempt: int, index: int, given: Any) -> ActionExecution:
        task, e = self.task, self.run.execution
        now = time.time()
        action = ActionExecution(
            name=self.spec.action or "std.noop",
            task_execution_id=task.id,
            execution_id=e.id,
            project_id=e.project_id,
            task_name=task.name,
            workflow_name=e.workflow_name,
            input=given if isinstance(given, dict) else {},
            index=index,
            attempt=attempt,
            created_at=now,
            updated_at=now,
        )
        self.run.actions.setdefault(task.id, {})[(attempt, index)] = action
        return action

    async def call(
        self, attempt: int, index: int, item: dict[str, Any], durable: bool = False
    ) -> Outcome:
        registry = self.run.engine.registry
        action = self.run.actions.get(self.task.id, {}).get((attempt, index))
        if action is not None and action.state in ("SUCCESS", "ERROR", "CANCELLED"):
            return Outcome(action.state == "SUCCESS", action.output, action.state_info)
        definition = registry.get(self.spec.action or "std.noop")
        if action is not None and action.id in self.run.interrupted:
            self.run.interrupted.discard(action.id)
            if not (self.spec.safe_rerun or (definition and definition.is_safe(action.input))):
                text = (
                    f"interrupted: the engine running {action.name} stopped; it is not run "
                    "again (it may have had its effect): set safe-rerun to allow it"
                )
                return await self.ended(action, Outcome(False, text, text), durable)
        if action is None:
            try:
                given = self.evaluate(self.spec.input, {**self.task.in_context, **item})
            except ExpressionError as exc:
                action = self.new_action(attempt, index, {})
                return await self.ended(action, Outcome(False, str(exc), str(exc)), durable)
            action = self.new_action(attempt, index, given)
            await self.run.engine.commit.write(actions=[action])
        if definition is None:
            text = f"unknown action {action.name}"
            return await self.ended(action, Outcome(False, text, text), durable)
        problem = definition.input_problem(action.input)
        if problem is None and privileged(action.name) and not self.run.execution.privileged:
            problem = (
                f"{action.name} acts on the infrastructure: only an execution an admin (or a "
                "rule template) started may call it"
            )
        if problem is not None:
            return await self.ended(action, Outcome(False, problem, problem), durable)
        context = ActionContext(
            self.run.execution.id, self.task.id, action.id, self.run.execution.project_id
        )
        try:
            if action.name in TIMER_ACTIONS:
                wait = timer_seconds(action.input, action.name)
                await asyncio.sleep(max(0.0, action.created_at + wait - time.time()))
                result = None
            else:
                result = await definition.run(action.input, context)
        except ActionError as exc:
            detail = exc.result if exc.result is not None else str(exc)
            return await self.ended(action, Outcome(False, detail, str(exc)[:_INFO_MAX]), durable)
        except (ExpressionError, ValueError, TypeError, LookupError, OSError) as exc:
            text = f"{action.name} failed: {exc}"[:_INFO_MAX]
            return await self.ended(action, Outcome(False, text, text), durable)
        return await self.ended(action, Outcome(True, result), durable)

    async def ended(self, action: ActionExecution, outcome: Outcome, durable: bool) -> Outcome:
        action.state = "SUCCESS" if outcome.ok else "ERROR"
        action.output = outcome.result if self.spec.keep_result else None
        action.state_info = outcome.info
        action.updated_at = time.time()
        if durable:
            # An item's end is written at once: a restart must not call it again.
            await self.run.engine.commit.write(actions=[action])
        else:
            self.run.mark_dirty(self.task, action)
        return outcome

    # --- a sub-workflow ------------------------------------------------------------------

    async def child(self) -> Outcome:
        engine = self.run.engine
        child_id = self.task.runtime_context.get("child")
        if child_id is None:
            try:
                given = self.evaluate(self.spec.input)
                child = await engine.start_child(self.run, self.task, self.spec.workflow, given)
            except (ExpressionError, LookupError, ValueError) as exc:
                return Outcome(False, str(exc), f"sub-workflow: {exc}")
            child_id = child.id
        ended = await engine.finished(child_id)
        if ended.state == "SUCCESS":
            return Outcome(True, ended.output)
        info = f"sub-workflow {ended.workflow_name} {ended.state}: {ended.state_info}"
        return Outcome(False, ended.state_info or ended.state, info[:_INFO_MAX])

    # --- the end of the task ---------------------------------------------------------------

    def complete(self, outcome: Outcome) -> None:
        task, ts = self.task, self.spec
        task.result = outcome.result
        published: Any = {}
        ok, info = outcome.ok, outcome.info
        wanted = ts.publish if ok else ts.publish_on_error
        if wanted:
            try:
                published = self.evaluate(wanted)
            except ExpressionError as exc:
                ok, info, published = False, f"publish failed: {exc}", {}
        task.published = published if isinstance(published, dict) else {}
        task.state = "SUCCESS" if ok else "ERROR"
        task.state_info = None if ok else (info or str(outcome.result))[:_INFO_MAX]
        if not ts.keep_result:
            task.result = None
        task.finished_at = task.updated_at = time.time()

    # --- helpers -------------------------------------------------------------------------

    def evaluate(self, value: Any, data: dict[str, Any] | None = None) -> Any:
        context = self.task.in_context if data is None else data
        return evaluate(value, self.run.scope(context, self.task))

    def note(self, **values: Any) -> None:
        rc = {**self.task.runtime_context, **values}
        self.task.runtime_context = {k: v for k, v in rc.items() if v is not None}

    async def delay(self, due: float) -> None:
        task = self.task
        task.state, task.updated_at = "RUNNING_DELAYED", time.time()
        await self.run.engine.commit.write(tasks=[task], actions=self.run.take_dirty(task))
        await asyncio.sleep(max(0.0, due - time.time()))
        task.state, task.updated_at = "RUNNING", time.time()

    async def run_paused(self) -> None:
        task, run = self.task, self.run
        task.state, task.updated_at = "PAUSED", time.time()
        if run.execution.state == "RUNNING":
            await run.pause(f"paused before task {task.name}")
        await run.engine.commit.write(tasks=[task])
        await run.unpaused.wait()
        task.state, task.updated_at = "RUNNING", time.time()
