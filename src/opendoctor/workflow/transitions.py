"""What follows a finished task: the transition decisions of one run.

Direct workflows follow their transitions (`on-success`, `on-error`, `on-complete`,
with guards, joins and the engine commands `succeed`, `fail` and `pause`); reverse
workflows run what the target task `requires`, each task once its requirements have
succeeded.

The decisions are made in memory, on the `Run` they are given: the tasks they start
are created there and written by the run in the commit that marks the finished task
`processed`. The same stored records give the same decisions, so a decision cut short
by a pause or a dead process is made again on resume, to the same successors. How a
run ends (`Run.finish`, `Run.fail`) and how it is stored stay with the run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opendoctor.core.workflows import FINISHED, TaskExecution
from opendoctor.workflow.expressions import ExpressionError, evaluate
from opendoctor.workflow.spec import TaskSpec, Transition, WorkflowSpec

if TYPE_CHECKING:
    from opendoctor.workflow.run import Run


def first_tasks(run: Run) -> list[str]:
    """The tasks a new execution starts with."""
    if run.spec.type == "reverse":
        return [n for n in needed(run) if not run.spec.tasks[n].requires]
    return run.spec.start_tasks()


def needed(run: Run) -> list[str]:
    """A reverse workflow's tasks the target task needs, itself included, in file order."""
    target = str(run.execution.params.get("task_name") or "")
    seen: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name in seen or name not in run.spec.tasks:
            continue
        seen.add(name)
        stack.extend(run.spec.tasks[name].requires)
    return [n for n in run.spec.tasks if n in seen]


def decide(run: Run, task: TaskExecution) -> list[TaskExecution]:
    """Mark `task` processed and create (in memory) the tasks it starts."""
    task.processed = True
    if run.execution.state in FINISHED:
        return []
    if run.spec.type == "reverse":
        return _reverse_next(run, task)
    ts = run.spec.tasks[task.name]
    chosen: list[Transition] = []
    if task.state == "SUCCESS":
        chosen += ts.on_success
    elif task.state == "ERROR":
        chosen += ts.on_error
    chosen += ts.on_complete if task.state in ("SUCCESS", "ERROR") else ()
    context = {**task.in_context, **task.published}
    started: list[TaskExecution] = []
    for transition in chosen:
        try:
            if transition.guard is not None and not evaluate(
                transition.guard, run.scope(context, task)
            ):
                continue
        except ExpressionError as exc:
            run.fail(f"task {task.name}: transition guard failed: {exc}")
            return []
        if transition.target == "pause":
            if task.runtime_context.get("paused_here"):
                continue  # resumed: the transitions after the pause go on
            # Decided again on resume, from here on: nothing it starts is created yet.
            task.runtime_context = {**task.runtime_context, "paused_here": True}
            task.processed = False
            for created in started:
                if created.state != "WAITING":
                    run.tasks.pop(created.id, None)
            _command(run, transition, context, task)
            return []
        if transition.target in ("succeed", "fail"):
            _command(run, transition, context, task)
            return started
        arrived = _arrive(run, transition.target, task, context)
        if arrived is not None:
            started.append(arrived)
    return started


def wake_joins(run: Run, started: list[TaskExecution]) -> None:
    """Start the waiting joins whose arrivals are all in (added to `started`)."""
    for join in [t for t in run.tasks.values() if t.state == "WAITING"]:
        if _join_satisfied(run.spec, join, run.spec.tasks[join.name]):
            join.state, join.started_at = "RUNNING", time.time()
            join.runtime_context = {**join.runtime_context, "joined": True}
            if not any(t is join for t in started):
                started.append(join)


def _arrive(
    run: Run, name: str, source: TaskExecution, context: dict[str, Any]
) -> TaskExecution | None:
    ts = run.spec.tasks[name]
    if ts.join is None:
        return run.new_task(name, context)
    join = next(
        (t for t in run.tasks.values() if t.name == name and "join" in t.runtime_context),
        None,
    )
    if join is None:
        join = run.new_task(name, {}, state="WAITING")
        join.runtime_context = {**join.runtime_context, "join": [], "joined": False}
    rc = join.runtime_context
    if rc["joined"]:
        return None  # a join of n that has run already: later arrivals start nothing
    join.runtime_context = {**rc, "join": [*rc["join"], source.name]}
    join.in_context = {**join.in_context, **context}
    join.updated_at = time.time()
    return join


def _join_satisfied(spec: WorkflowSpec, join: TaskExecution, ts: TaskSpec) -> bool:
    arrived = set(join.runtime_context.get("join", []))
    if ts.join == "all":
        return arrived >= set(spec.inbound(join.name))
    return len(join.runtime_context.get("join", [])) >= int(ts.join or 0)


def _reverse_next(run: Run, task: TaskExecution) -> list[TaskExecution]:
    if task.state != "SUCCESS":
        return []
    done = {t.name: t for t in run.tasks.values() if t.state == "SUCCESS"}
    created = {t.name for t in run.tasks.values()}
    started = []
    for name in needed(run):
        ts = run.spec.tasks[name]
        if name in created or task.name not in ts.requires:
            continue
        if all(r in done for r in ts.requires):
            context: dict[str, Any] = {}
            for r in ts.requires:
                context |= {**done[r].in_context, **done[r].published}
            started.append(run.new_task(name, context))
    return started


def _command(
    run: Run, transition: Transition, context: dict[str, Any], task: TaskExecution
) -> None:
    """An engine command (`succeed`, `fail`, `pause`) reached by a transition."""
    try:
        params = evaluate(transition.params, run.scope(context, task))
    except ExpressionError as exc:
        run.fail(f"task {task.name}: {transition.target}: {exc}")
        return
    message = str(params.get("msg") or "") or None
    if transition.target == "succeed":
        run.finish("SUCCESS", message)
    elif transition.target == "fail":
        run.fail(message or f"failed by task {task.name}")
    else:
        e = run.execution
        e.state = "PAUSED"
        e.state_info = message or f"paused by task {task.name}"
        e.updated_at = time.time()
        run.unpaused.clear()
        run.engine.announce(e)
