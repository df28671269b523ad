"""The engine runs the language as Mistral's documentation describes it: these workflows
are written afresh after its examples, and each checks what an operator would look at
(the execution's state and output, its tasks' states, results and published values)."""

from __future__ import annotations

import time

import pytest

from opendoctor.workflow.engine import InputError
from tests.unit.workflow.bed import Bed, lab_vim

CHAIN = """
version: '2.0'
greet:
  input:
    - name
    - greeting: Hello
  vars:
    punctuation: "!"
  output:
    text: <% $.text %>
    shout: "{{ _.text | upper }}"
  tasks:
    compose:
      action: std.echo output="<% $.greeting %>, <% $.name %><% $.punctuation %>"
      publish:
        text: <% task().result %>
      on-success: [log]
    log:
      action: test.count key=log value=<% $.text %>
"""


async def test_a_chain_publishes_and_its_output_reads_the_published_values(bed: Bed) -> None:
    await bed.add(CHAIN)
    done = await bed.run("greet", {"name": "opendoctor"})
    assert done.state == "SUCCESS", done.state_info
    assert done.output == {"text": "Hello, opendoctor!", "shout": "HELLO, OPENDOCTOR!"}
    tasks = await bed.tasks(done.id)
    assert [tasks["compose"].state, tasks["log"].state] == ["SUCCESS", "SUCCESS"]
    assert tasks["log"].result == "Hello, opendoctor!"
    actions = await bed.store.action_executions(None, 10, task_execution_id=tasks["log"].id)
    assert [(a.name, a.state, a.output) for a in actions] == [
        ("test.count", "SUCCESS", "Hello, opendoctor!")
    ]


async def test_input_is_checked_before_anything_is_stored(bed: Bed) -> None:
    await bed.add(CHAIN)
    with pytest.raises(InputError, match="missing input: name"):
        await bed.workflows.start("greet", {}, "p1")
    with pytest.raises(InputError, match="unexpected input: colour"):
        await bed.workflows.start("greet", {"name": "x", "colour": "red"}, "p1")
    assert await bed.store.executions(None, 10) == []


BRANCHES = """
version: '2.0'
branch:
  input: [n]
  tasks:
    check:
      action: test.count key=check value=<% $.n %>
      publish:
        n: <% task().result %>
      on-success:
        - big: <% $.n > 10 %>
        - small: <% $.n <= 10 %>
      on-complete: [always]
    big:
      action: std.fail
      on-error: [recover]
    small:
      action: std.echo output=small
    recover:
      action: std.echo output=recovered
    always:
      action: std.noop
"""


async def test_guards_choose_the_branch_and_on_error_handles_a_failure(bed: Bed) -> None:
    await bed.add(BRANCHES)
    small = await bed.run("branch", {"n": 3})
    assert small.state == "SUCCESS"
    assert set(await bed.tasks(small.id)) == {"check", "small", "always"}
    big = await bed.run("branch", {"n": 30})
    assert big.state == "SUCCESS", big.state_info  # the failure was handled
    tasks = await bed.tasks(big.id)
    assert set(tasks) == {"check", "big", "recover", "always"}
    assert tasks["big"].state == "ERROR"


UNHANDLED = """
version: '2.0'
broken:
  output-on-error:
    why: failed
  tasks:
    one:
      action: std.fail error_data="disk on fire"
      on-success: [two]
    two:
      action: std.noop
"""


async def test_an_unhandled_failure_fails_the_execution_and_names_the_task(bed: Bed) -> None:
    await bed.add(UNHANDLED)
    done = await bed.run("broken")
    assert done.state == "ERROR"
    assert "one" in (done.state_info or "")
    assert done.output == {"why": "failed"}
    assert set(await bed.tasks(done.id)) == {"one"}


JOINS = """
version: '2.0'
fan:
  tasks:
    start:
      action: std.noop
      on-success: [a, b, c]
    a:
      action: std.echo output=a
      publish: {from_a: <% task().result %>}
      on-success: [all_of_them, first_of_them]
    b:
      action: std.echo output=b
      publish: {from_b: <% task().result %>}
      on-success: [all_of_them, first_of_them]
    c:
      action: std.echo output=c
      on-success: [all_of_them, first_of_them]
    all_of_them:
      join: all
      action: std.echo output="<% $.from_a %><% $.from_b %>"
    first_of_them:
      join: 1
      action: test.count key=first
"""


async def test_join_all_waits_for_every_branch_and_join_one_runs_once(bed: Bed) -> None:
    await bed.add(JOINS)
    done = await bed.run("fan")
    assert done.state == "SUCCESS", done.state_info
    tasks = await bed.tasks(done.id)
    assert tasks["all_of_them"].result == "ab"
    assert bed.calls["first"] == 1
    assert len(await bed.store.tasks(None, 100, execution_id=done.id, name="all_of_them")) == 1


ITEMS = """
version: '2.0'
each:
  input: [names]
  tasks:
    visit:
      with-items: name in <% $.names %>
      concurrency: 3
      action: test.count key=item value=<% $.name %>
      publish:
        visited: <% task().result %>
  output:
    visited: <% $.visited %>
"""


async def test_with_items_keeps_the_order_and_its_concurrency(bed: Bed) -> None:
    await bed.add(ITEMS)
    names = [f"n{i}" for i in range(20)]
    done = await bed.run("each", {"names": names})
    assert done.state == "SUCCESS", done.state_info
    assert done.output == {"visited": names}
    assert bed.calls["item"] == 20
    assert 1 < bed.most_at_once <= 3
    task = (await bed.tasks(done.id))["visit"]
    actions = await bed.store.action_executions(None, 100, task_execution_id=task.id)
    assert sorted(a.index for a in actions) == list(range(20))


RETRY = """
version: '2.0'
flaky:
  tasks:
    call:
      action: test.count key=flaky
      retry:
        count: 5
        delay: 0.01
        break-on: <% task().result.left = 99 %>
"""

POLL = """
version: '2.0'
poll:
  tasks:
    ask:
      action: test.count key=poll value=pending
      retry:
        count: 3
        delay: 0
        continue-on: <% task().result = pending %>
"""


async def test_retry_repeats_a_failure_until_it_passes_or_the_count_is_spent(bed: Bed) -> None:
    await bed.add(RETRY)
    bed.failures["flaky"] = 2
    done = await bed.run("flaky")
    assert done.state == "SUCCESS", done.state_info
    assert bed.calls["flaky"] == 3
    bed.failures["flaky"] = 10
    failed = await bed.run("flaky")
    assert failed.state == "ERROR"
    assert bed.calls["flaky"] == 3 + 6  # the first call and five retries
    await bed.add(POLL)
    polled = await bed.run("poll")
    assert polled.state == "SUCCESS"
    assert bed.calls["poll"] == 4  # continue-on held every time: 1 + 3 repeats


BREAK = """
version: '2.0'
stop_early:
  tasks:
    call:
      action: test.count key=brk
      retry:
        count: 5
        delay: 0
        break-on: <% task().result.left >= 0 %>
"""


async def test_break_on_stops_the_retries(bed: Bed) -> None:
    await bed.add(BREAK)
    bed.failures["brk"] = 3
    done = await bed.run("stop_early")
    assert done.state == "ERROR"
    assert bed.calls["brk"] == 1


TIMING = """
version: '2.0'
timing:
  tasks:
    slow:
      action: std.wait seconds=5
      timeout: 0.2
      on-error: [after]
    after:
      wait-before: 0.2
      wait-after: 0.1
      action: std.noop
"""


async def test_timeout_ends_a_task_and_waits_hold_it_back(bed: Bed) -> None:
    await bed.add(TIMING)
    began = time.time()
    done = await bed.run("timing")
    assert done.state == "SUCCESS", done.state_info
    tasks = await bed.tasks(done.id)
    assert tasks["slow"].state == "ERROR"
    assert "timed out" in (tasks["slow"].state_info or "")
    after = tasks["after"]
    assert after.finished_at is not None and after.started_at is not None
    assert after.finished_at - after.started_at >= 0.3
    assert time.time() - began < 4  # the 5 s wait did not run out


PAUSING = """
version: '2.0'
careful:
  tasks:
    first:
      action: test.count key=p1
      on-success: [second]
    second:
      pause-before: true
      action: test.count key=p2
"""


async def test_pause_before_holds_the_execution_until_it_is_resumed(bed: Bed) -> None:
    await bed.add(PAUSING)
    started = await bed.workflows.start("careful", {}, "p1")
    await bed.state(started.id, "PAUSED")
    assert (bed.calls["p1"], bed.calls["p2"]) == (1, 0)
    await bed.workflows.set_state(started.id, "RUNNING")
    done = await bed.finished(started.id)
    assert done.state == "SUCCESS"
    assert bed.calls["p2"] == 1


async def test_the_live_stream_hears_an_execution_pause_and_go_on(bed: Bed) -> None:
    await bed.add(PAUSING)
    with bed.engine.live.subscribe(lambda project: True, kinds={"workflow.execution"}) as heard:
        started = await bed.workflows.start("careful", {}, "p1")
        await bed.state(started.id, "PAUSED")
        await bed.workflows.set_state(started.id, "RUNNING")
        await bed.finished(started.id)
        states = []
        while (event := await heard.get(timeout=1.0)) is not None:
            states.append(event.data["state"])
            if event.data["state"] == "SUCCESS":
                break
    # Paused by its own pause-before, not only by a request: a dashboard sees it so.
    assert states == ["RUNNING", "PAUSED", "RUNNING", "SUCCESS"]


COMMANDS = """
version: '2.0'
commands:
  input: [how]
  output:
    how: <% $.how %>
  tasks:
    decide:
      action: std.noop
      on-success:
        - succeed: <% $.how = 'succeed' %>
        - fail(msg="told to fail"): <% $.how = 'fail' %>
        - pause: <% $.how = 'pause' %>
        - never
    never:
      action: test.count key=never
"""


async def test_engine_commands_end_or_pause_the_execution(bed: Bed) -> None:
    await bed.add(COMMANDS)
    ok = await bed.run("commands", {"how": "succeed"})
    assert (ok.state, ok.output) == ("SUCCESS", {"how": "succeed"})
    failed = await bed.run("commands", {"how": "fail"})
    assert (failed.state, failed.state_info) == ("ERROR", "told to fail")
    paused = await bed.workflows.start("commands", {"how": "pause"}, "p1")
    await bed.state(paused.id, "PAUSED")
    await bed.workflows.set_state(paused.id, "RUNNING")
    assert (await bed.finished(paused.id)).state == "SUCCESS"
    assert bed.calls["never"] == 1  # only the paused run went on to it


NESTED = """
version: '2.0'
parent:
  input: [x]
  output:
    doubled: <% $.doubled %>
  tasks:
    call_child:
      workflow: child
      input:
        value: <% $.x %>
      publish:
        doubled: <% task().result.twice %>
child:
  input: [value]
  output:
    twice: <% $.value * 2 %>
  tasks:
    nothing:
      action: std.noop
"""


async def test_a_sub_workflow_runs_as_its_own_execution_and_returns_its_output(bed: Bed) -> None:
    await bed.add(NESTED)
    done = await bed.run("parent", {"x": 21})
    assert done.state == "SUCCESS", done.state_info
    assert done.output == {"doubled": 42}
    task = (await bed.tasks(done.id))["call_child"]
    children = await bed.store.executions(None, 10, task_execution_id=task.id)
    assert [(c.workflow_name, c.state, c.root_execution_id) for c in children] == [
        ("child", "SUCCESS", done.id)
    ]


REVERSE = """
version: '2.0'
build:
  type: reverse
  tasks:
    fetch:
      action: test.count key=fetch value=src
      publish: {src: <% task().result %>}
    configure:
      requires: [fetch]
      action: std.echo output="configured <% $.src %>"
      publish: {conf: <% task().result %>}
    compile:
      requires: [configure]
      action: std.echo output="<% $.conf %> and compiled"
    docs:
      requires: [fetch]
      action: test.count key=docs
"""


async def test_a_reverse_workflow_runs_only_what_the_target_requires(bed: Bed) -> None:
    await bed.add(REVERSE)
    done = await bed.run("build", params={"task_name": "compile"})
    assert done.state == "SUCCESS", done.state_info
    tasks = await bed.tasks(done.id)
    assert set(tasks) == {"fetch", "configure", "compile"}
    assert tasks["compile"].result == "configured src and compiled"
    assert bed.calls["docs"] == 0
    with pytest.raises(InputError, match="task_name"):
        await bed.workflows.start("build", {}, "p1")


KEEP = """
version: '2.0'
forget:
  output:
    size: <% $.size %>
  tasks:
    big:
      action: std.echo
      input:
        output: [1, 2, 3, 4]
      keep-result: false
      publish:
        size: <% len(task().result) %>
"""


async def test_keep_result_false_publishes_but_stores_no_result(bed: Bed) -> None:
    await bed.add(KEEP)
    done = await bed.run("forget")
    assert done.output == {"size": 4}
    assert (await bed.tasks(done.id))["big"].result is None


VIM = """
version: '2.0'
drain:
  input: [host]
  tasks:
    find:
      action: vim.list_servers host=<% $.host %>
      publish:
        ids: <% task().result.select($.id) %>
      on-success: [move]
    move:
      with-items: id in <% $.ids %>
      concurrency: 2
      action: nova.servers_migrate server=<% $.id %> host=compute2
"""


async def test_vim_actions_move_servers_for_an_admin_only(bed: Bed) -> None:
    await bed.add(VIM)
    refused = await bed.run("drain", {"host": "compute1"})
    assert refused.state == "ERROR"
    assert "only an execution an admin" in (refused.state_info or "")
    assert {s.host for s in bed.vim.servers.values()} == {"compute1"}
    done = await bed.run("drain", {"host": "compute1"}, admin=True)
    assert done.state == "SUCCESS", done.state_info
    assert {s.host for s in bed.vim.servers.values()} == {"compute2"}


def test_the_shipped_workflows_are_valid() -> None:
    from opendoctor.workflow.actions import Toolbox, builtin_actions
    from opendoctor.workflow.service import builtin_texts
    from opendoctor.workflow.spec import parse

    registry = builtin_actions(Toolbox(vim=lab_vim()))
    names = set()
    for text in builtin_texts().values():
        names |= set(parse(text, known_action=registry.__contains__))
    assert names == {"opendoctor.host_recovery", "opendoctor.vm_recovery", "opendoctor.switch_over"}


async def test_a_changed_definition_starts_at_once(bed: Bed) -> None:
    await bed.add(CHAIN)
    first = await bed.run("greet", {"name": "a"})
    assert first.output["text"] == "Hello, a!"
    await bed.workflows.update(CHAIN.replace("greeting: Hello", "greeting: Hi"), "p1")
    second = await bed.run("greet", {"name": "a"})
    assert second.output["text"] == "Hi, a!"


async def test_ended_executions_and_commits_are_counted(bed: Bed) -> None:
    from prometheus_client import REGISTRY

    def ended(state: str) -> float:
        labels = {"workflow": "greet", "state": state}
        return REGISTRY.get_sample_value("opendoctor_workflow_executions_total", labels) or 0.0

    commits = REGISTRY.get_sample_value("opendoctor_workflow_commit_seconds_count") or 0.0
    await bed.add(CHAIN)
    before = ended("SUCCESS")
    await bed.run("greet", {"name": "x"})
    assert ended("SUCCESS") == before + 1
    assert (REGISTRY.get_sample_value("opendoctor_workflow_commit_seconds_count") or 0) > commits


LOOP = """
version: '2.0'
forever:
  tasks:
    begin:
      action: std.noop
      on-success: [again]
    again:
      action: std.noop
      on-success: [again]
"""


async def test_a_loop_without_end_is_stopped_at_the_task_bound(bed: Bed) -> None:
    bed.engine.settings = bed.engine.settings.model_copy(update={"max_tasks": 20})
    await bed.add(LOOP)
    done = await bed.run("forever")
    assert done.state == "ERROR"
    assert "more than 20 task executions" in (done.state_info or "")
    tasks = await bed.store.tasks(None, 100, execution_id=done.id)
    assert len(tasks) == 21
    assert not [t for t in tasks if t.state not in ("SUCCESS", "CANCELLED")]


DEFAULTS = """
version: '2.0'
defaults:
  input: [hosts, ports]
  output:
    pairs: <% $.pairs %>
    why: <% $.why %>
  task-defaults:
    on-error: [report]
    retry:
      count: 1
      delay: 0
  tasks:
    zip:
      with-items:
        - host in <% $.hosts %>
        - port in <% $.ports %>
      action: std.echo output="<% $.host %>:<% $.port %>"
      publish:
        pairs: <% task().result %>
      on-success: [broken]
    broken:
      action: std.fail error_data="disk on fire"
      publish-on-error:
        why: <% task().result %>
    report:
      action: test.count key=report
      on-error: []
"""


async def test_task_defaults_publish_on_error_and_zipped_items(bed: Bed) -> None:
    await bed.add(DEFAULTS)
    done = await bed.run("defaults", {"hosts": ["a", "b"], "ports": [1, 2]})
    assert done.state == "SUCCESS", done.state_info  # the failure went to `report`
    assert done.output == {"pairs": ["a:1", "b:2"], "why": "disk on fire"}
    tasks = await bed.tasks(done.id)
    assert tasks["broken"].state == "ERROR"
    # The default retry: `broken` was called twice (once, then one retry).
    actions = await bed.store.action_executions(None, 10, task_execution_id=tasks["broken"].id)
    assert [a.attempt for a in actions] == [0, 1]
    assert bed.calls["report"] == 1


BAD_MESSAGE = """
version: '2.0'
bad_message:
  tasks:
    one:
      action: std.noop
      on-success:
        - fail(msg=<% $.nowhere %>)
"""


async def test_a_command_whose_message_fails_still_ends_the_run(bed: Bed) -> None:
    await bed.add(BAD_MESSAGE)
    done = await bed.run("bad_message")
    assert done.state == "ERROR"
    assert "nowhere" in (done.state_info or "")
