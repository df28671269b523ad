"""Executions survive their engine: a restart resumes each where it stopped, never runs
a finished task again, calls again only what is safe to call again, and waits only the
rest of a wait."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import eventually
from tests.unit.workflow.bed import CHAIN, Bed


async def _calls(bed: Bed, key: str, n: int) -> None:
    await eventually(lambda: bed.calls[key] >= n, what=f"{key} called {n} times")


async def test_an_interrupted_action_is_not_run_again_unless_safe(bed: Bed) -> None:
    await bed.add(CHAIN.replace("SAFE", "false"))
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await _calls(bed, "two", 1)
    await bed.crash()
    done = await bed.finished(started.id)
    assert done.state == "ERROR"
    tasks = await bed.tasks(started.id)
    assert tasks["two"].state == "ERROR"
    assert "interrupted" in (tasks["two"].state_info or "")
    assert (bed.calls["one"], bed.calls["two"], bed.calls["three"]) == (1, 1, 0)


async def test_a_safe_action_runs_again_and_the_finished_tasks_do_not(bed: Bed) -> None:
    await bed.add(CHAIN.replace("SAFE", "true"))
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await _calls(bed, "two", 1)
    await bed.crash()
    await _calls(bed, "two", 2)
    bed.gates["two"].set()
    done = await bed.finished(started.id)
    assert done.state == "SUCCESS", done.state_info
    assert (bed.calls["one"], bed.calls["two"], bed.calls["three"]) == (1, 2, 1)
    tasks = await bed.tasks(started.id)
    assert len(await bed.store.tasks(None, 100, execution_id=started.id)) == 3
    actions = await bed.store.action_executions(None, 10, task_execution_id=tasks["two"].id)
    assert [a.state for a in actions] == ["SUCCESS"]  # the same action execution, run again


TIMER = """
version: '2.0'
later:
  tasks:
    first:
      action: test.count key=first
      on-success: [second]
    second:
      wait-before: 1.5
      action: test.count key=second
"""


async def test_a_wait_outlives_a_restart_and_only_the_rest_is_waited(bed: Bed) -> None:
    await bed.add(TIMER)
    began = time.time()
    started = await bed.workflows.start("later", {}, "p1")

    async def delayed() -> bool:
        tasks = await bed.tasks(started.id)
        return "second" in tasks and tasks["second"].state == "RUNNING_DELAYED"

    await eventually(delayed, what="the second task waiting")
    await asyncio.sleep(0.5)  # the clock the wait runs on, not a synchronisation
    await bed.crash()
    done = await bed.finished(started.id)
    assert done.state == "SUCCESS", done.state_info
    second = (await bed.tasks(started.id))["second"]
    assert second.finished_at is not None
    waited = second.finished_at - began
    assert 1.5 <= waited < 1.9, waited  # 2.0 and more if the wait had started over
    assert (bed.calls["first"], bed.calls["second"]) == (1, 1)


ITEMS = """
version: '2.0'
each:
  tasks:
    visit:
      with-items: x in <% range(8).select(concat('i', str($))) %>
      concurrency: 1
      action: test.read key=<% $.x %>
"""


async def test_items_done_before_a_restart_are_not_called_again(bed: Bed) -> None:
    await bed.add(ITEMS)
    bed.gates["i3"] = asyncio.Event()
    started = await bed.workflows.start("each", {}, "p1")
    await _calls(bed, "i3", 1)
    await bed.crash()
    await _calls(bed, "i3", 2)
    bed.gates["i3"].set()
    done = await bed.finished(started.id)
    assert done.state == "SUCCESS", done.state_info
    assert [bed.calls[f"i{i}"] for i in range(8)] == [1, 1, 1, 2, 1, 1, 1, 1]


async def test_a_paused_execution_stays_paused_across_a_restart(bed: Bed) -> None:
    await bed.add(CHAIN.replace("SAFE", "true"))
    bed.gates["two"] = asyncio.Event()
    started = await bed.workflows.start("chain", {}, "p1")
    await _calls(bed, "two", 1)
    await bed.workflows.set_state(started.id, "PAUSED")
    bed.gates["two"].set()
    await eventually(
        lambda: _task_state(bed, started.id, "two", "SUCCESS"), what="two done while paused"
    )
    await bed.crash()
    assert (await bed.store.execution(started.id)).state == "PAUSED"  # type: ignore[union-attr]
    assert bed.calls["three"] == 0
    await bed.workflows.set_state(started.id, "RUNNING")
    done = await bed.finished(started.id)
    assert done.state == "SUCCESS"
    assert (bed.calls["one"], bed.calls["two"], bed.calls["three"]) == (1, 1, 1)


async def _task_state(bed: Bed, execution_id: str, name: str, state: str) -> bool:
    tasks = await bed.tasks(execution_id)
    return name in tasks and tasks[name].state == state


NESTED = """
version: '2.0'
outer:
  output:
    inner: <% $.inner %>
  tasks:
    call:
      workflow: inner
      publish:
        inner: <% task().result.said %>
inner:
  output:
    said: <% $.said %>
  tasks:
    hold:
      action: test.read key=inner value=done
      publish:
        said: <% task().result %>
"""


async def test_a_parent_waiting_on_its_sub_workflow_goes_on_after_a_restart(bed: Bed) -> None:
    await bed.add(NESTED)
    bed.gates["inner"] = asyncio.Event()
    started = await bed.workflows.start("outer", {}, "p1")
    await _calls(bed, "inner", 1)
    await bed.crash()
    await _calls(bed, "inner", 2)  # a read: called again
    bed.gates["inner"].set()
    done = await bed.finished(started.id)
    assert (done.state, done.output) == ("SUCCESS", {"inner": "done"}), done.state_info
    children = await bed.store.executions(None, 10, root_execution_id=started.id)
    assert [c.state for c in children] == ["SUCCESS"]
