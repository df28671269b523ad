"""The workflow language: Mistral v2 workflow files parse into specs, and every file
that does not validate is refused with the line and path of the offending node."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable

import pytest

from opendoctor.workflow.spec import (
    MAX_TASKS,
    MAX_TEXT,
    REQUIRED,
    Retry,
    SpecError,
    Transition,
    WorkflowSpec,
    parse,
)


def _parse(text: str, known_action: Callable[[str], bool] | None = None) -> dict[str, WorkflowSpec]:
    return parse(textwrap.dedent(text), known_action)


def _refused(text: str, known_action: Callable[[str], bool] | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse(textwrap.dedent(text), known_action)
    return caught.value


DIRECT = """\
version: '2.0'

evacuate_host:
  description: Move every server off a failed host
  tags: [recovery, host]
  input:
    - host
    - dry_run: false
  output:
    moved: <% $.moved %>
  output-on-error:
    reason: <% execution().state_info %>
  vars:
    moved: []
  tasks:
    find_servers:
      action: vim.list_servers host=<% $.host %> all_tenants=true limit=10
      publish:
        servers: <% task().result %>
      publish-on-error:
        reason: "{{ task().state_info }}"
      on-success:
        - evacuate: <% $.servers.len() > 0 %>
        - nothing_to_do: <% $.servers.len() = 0 %>
      on-error:
        - fail(msg="cannot list the servers")
    evacuate:
      action: vim.evacuate
      input:
        server: <% $.server %>
        on_shared_storage: true
      with-items: server in <% $.servers %>
      concurrency: 3
      retry:
        count: 2
        delay: 10
        break-on: <% $.fatal %>
      timeout: 60
      on-complete: report
    nothing_to_do:
      action: std.noop
      on-success: report
    report:
      join: 1
      action: std.echo output="done"
      keep-result: false
      safe-rerun: true
      wait-before: 1
      wait-after: <% $.pause %>
      pause-before: <% $.dry_run %>
"""


def test_a_direct_workflow_parses_with_every_section() -> None:
    wf = _parse(DIRECT)["evacuate_host"]
    assert wf.type == "direct"
    assert wf.line == 3
    assert wf.description == "Move every server off a failed host"
    assert wf.tags == ("recovery", "host")
    assert wf.input == (("host", REQUIRED), ("dry_run", False))
    assert wf.output == {"moved": "<% $.moved %>"}
    assert wf.vars == {"moved": []}
    tasks = wf.tasks
    assert list(tasks) == ["find_servers", "evacuate", "nothing_to_do", "report"]

    find = tasks["find_servers"]
    assert find.line == 17
    assert find.action == "vim.list_servers"
    assert find.input == {"host": "<% $.host %>", "all_tenants": True, "limit": 10}
    assert find.publish == {"servers": "<% task().result %>"}
    assert find.publish_on_error == {"reason": "{{ task().state_info }}"}
    assert find.on_success == (
        Transition("evacuate", "<% $.servers.len() > 0 %>"),
        Transition("nothing_to_do", "<% $.servers.len() = 0 %>"),
    )
    assert find.on_error == (Transition("fail", None, {"msg": "cannot list the servers"}),)

    evacuate = tasks["evacuate"]
    assert evacuate.with_items == (("server", "<% $.servers %>"),)
    assert evacuate.concurrency == 3
    assert evacuate.retry == Retry(count=2, delay=10, break_on="<% $.fatal %>")
    assert evacuate.timeout == 60
    assert evacuate.input == {"server": "<% $.server %>", "on_shared_storage": True}
    assert evacuate.on_complete == (Transition("report"),)

    report = tasks["report"]
    assert report.join == 1
    assert report.input == {"output": "done"}
    assert (report.keep_result, report.safe_rerun) == (False, True)
    assert (report.wait_before, report.wait_after) == (1, "<% $.pause %>")
    assert report.pause_before == "<% $.dry_run %>"
    assert tasks["nothing_to_do"].action == "std.noop"

    assert wf.start_tasks() == ["find_servers"]
    assert wf.inbound("report") == ["evacuate", "nothing_to_do"]
    assert wf.inbound("find_servers") == []


def test_a_task_without_action_or_workflow_is_a_noop_and_required_survives_pickle() -> None:
    wf = _parse(
        """
        version: 2.0
        wf:
          input: [a]
          tasks:
            only: {}
        """
    )["wf"]
    assert wf.tasks["only"].action == "std.noop"
    assert pickle.loads(pickle.dumps(REQUIRED)) is REQUIRED


def test_join_all_and_a_parallel_start() -> None:
    wf = _parse(
        """
        version: '2.0'
        wf:
          tasks:
            a:
              on-success: [c]
            b:
              on-success: [c]
            c:
              join: all
        """
    )["wf"]
    assert wf.start_tasks() == ["a", "b"]
    assert wf.tasks["c"].join == "all"
    assert wf.inbound("c") == ["a", "b"]


def test_with_items_zipped_and_literal_lists() -> None:
    task = _parse(
        """
        version: '2.0'
        wf:
          tasks:
            t:
              action: std.echo output=<% $.x %>
              with-items:
                - x in [1, 2, 3]
                - y in <% $.ys %>
                - z in {{ _.zs }}
        """
    )["wf"].tasks["t"]
    assert task.with_items == (("x", [1, 2, 3]), ("y", "<% $.ys %>"), ("z", "{{ _.zs }}"))


def test_reverse_workflow_with_requires() -> None:
    wf = _parse(
        """
        version: '2.0'
        restore:
          type: reverse
          tasks:
            fence:
              action: fence.power_off
            disable:
              action: vim.disable_host
              requires: fence
            evacuate:
              action: vim.evacuate
              requires: [fence, disable]
        """
    )["restore"]
    assert wf.type == "reverse"
    assert wf.tasks["evacuate"].requires == ("fence", "disable")
    assert wf.tasks["disable"].requires == ("fence",)
    assert wf.start_tasks() == ["fence"]
    assert wf.inbound("evacuate") == ["fence", "disable"]


def test_a_workflow_task_and_several_workflows_in_one_file() -> None:
    specs = _parse(
        """
        version: '2.0'
        parent:
          tasks:
            call_child:
              workflow: child name=<% $.name %>
              input:
                count: 2
        child:
          input:
            - name
            - count: 1
          tasks:
            echo:
              action: std.echo output=<% $.name %>
        """
    )
    assert list(specs) == ["parent", "child"]
    task = specs["parent"].tasks["call_child"]
    assert (task.action, task.workflow) == (None, "child")
    assert task.input == {"name": "<% $.name %>", "count": 2}


def test_task_defaults_apply_where_a_task_sets_nothing_and_never_to_itself() -> None:
    wf = _parse(
        """
        version: '2.0'
        wf:
          task-defaults:
            on-error:
              - handle_error
            retry:
              count: 3
              delay: 2
              continue-on: <% $.again %>
            timeout: 30
            wait-before: 1
            wait-after: 2
            pause-before: false
            concurrency: 4
            safe-rerun: true
          tasks:
            first:
              action: std.noop
              on-success: second
            second:
              action: std.noop
              timeout: 5
              on-error: []
            handle_error:
              action: std.echo output=oops
        """
    )["wf"]
    tasks = wf.tasks
    assert tasks["first"].on_error == (Transition("handle_error"),)
    assert tasks["first"].retry == Retry(3, 2, None, "<% $.again %>")
    assert (tasks["first"].timeout, tasks["second"].timeout) == (30, 5)
    assert tasks["second"].on_error == ()
    assert tasks["handle_error"].on_error == ()
    assert tasks["handle_error"].concurrency == 4
    assert tasks["handle_error"].safe_rerun is True
    assert (tasks["first"].wait_before, tasks["first"].wait_after) == (1, 2)
    assert wf.start_tasks() == ["first"]


def test_engine_commands_with_guards_and_messages() -> None:
    task = _parse(
        """
        version: '2.0'
        wf:
          tasks:
            check:
              action: std.noop
              on-complete:
                - succeed: <% $.ok %>
                - pause: "{{ _.hold }}"
                - fail(msg=<% $.reason %>): <% not $.ok %>
                - fail(msg='it failed', )
        """
    )["wf"].tasks["check"]
    assert task.on_complete == (
        Transition("succeed", "<% $.ok %>"),
        Transition("pause", "{{ _.hold }}"),
        Transition("fail", "<% not $.ok %>", {"msg": "<% $.reason %>"}),
        Transition("fail", None, {"msg": "it failed"}),
    )


def test_the_newer_on_clause_form_with_next_and_publish() -> None:
    task = _parse(
        """
        version: '2.0'
        wf:
          tasks:
            a:
              publish:
                x: 1
              on-success:
                publish:
                  branch:
                    y: <% task().result %>
                next:
                  - b: <% $.y %>
              on-error:
                publish:
                  branch:
                    why: <% task().state_info %>
                next: fail
              on-complete:
                publish:
                  branch:
                    done: true
            b: {}
        """
    )["wf"].tasks["a"]
    assert task.on_success == (Transition("b", "<% $.y %>"),)
    assert task.on_error == (Transition("fail"),)
    assert task.on_complete == ()
    assert task.publish == {"x": 1, "y": "<% task().result %>", "done": True}
    assert task.publish_on_error == {"why": "<% task().state_info %>", "done": True}


def test_known_action_accepts_and_refuses() -> None:
    text = """
        version: '2.0'
        wf:
          tasks:
            a:
              action: std.echo output=1
            b:
              action: nova.nope
        """
    err = _refused(text, known_action=lambda name: name.startswith("std."))
    assert (err.line, err.path) == (8, "wf.tasks.b.action")
    assert err.problem == "unknown action 'nova.nope'"
    assert str(err) == "line 8: wf.tasks.b.action: unknown action 'nova.nope'"


# -- one test per validation problem: the line and the path ------------------------

CASES = [
    (
        "unknown_task_key",
        "version: '2.0'\nwf:\n  tasks:\n    t1:\n      actoin: std.noop\n",
        5,
        "wf.tasks.t1.actoin",
        "unknown key 'actoin'",
    ),
    (
        "unknown_workflow_key",
        "version: '2.0'\nwf:\n  taks: {}\n  tasks:\n    t: {}\n",
        3,
        "wf.taks",
        "unknown key 'taks'",
    ),
    (
        "transition_to_nothing",
        "version: '2.0'\nmy_wf:\n  tasks:\n    t1:\n      on-success:\n        - t2\n"
        "        - t9\n    t2: {}\n",
        7,
        "my_wf.tasks.t1.on-success[1]",
        "no task named 't9' in workflow my_wf",
    ),
    (
        "guarded_transition_to_nothing",
        "version: '2.0'\nwf:\n  tasks:\n    t1:\n      on-error:\n        - gone: <% true %>\n",
        6,
        "wf.tasks.t1.on-error[0]",
        "no task named 'gone'",
    ),
    (
        "default_transition_to_nothing",
        "version: '2.0'\nwf:\n  task-defaults:\n    on-error: cleanup\n  tasks:\n    t: {}\n",
        4,
        "wf.task-defaults.on-error",
        "no task named 'cleanup'",
    ),
    (
        "action_and_workflow",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      action: std.noop\n      workflow: x\n",
        6,
        "wf.tasks.t",
        "not both",
    ),
    (
        "wrong_type_input",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      input: [1, 2]\n",
        5,
        "wf.tasks.t.input",
        "must be a mapping",
    ),
    (
        "wrong_type_timeout",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      timeout: soon\n",
        5,
        "wf.tasks.t.timeout",
        "must be a number",
    ),
    (
        "negative_count",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      retry:\n        count: -1\n",
        6,
        "wf.tasks.t.retry.count",
        "must be an integer",
    ),
    (
        "retry_without_count",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      retry:\n        delay: 3\n",
        6,
        "wf.tasks.t.retry",
        "retry needs a count",
    ),
    (
        "break_on_not_an_expression",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      retry:\n        count: 1\n"
        "        break-on: yes please\n",
        7,
        "wf.tasks.t.retry.break-on",
        "must be an expression",
    ),
    (
        "join_zero",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      join: 0\n",
        5,
        "wf.tasks.t.join",
        "join must be 'all' or a positive number",
    ),
    (
        "join_word",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      join: some\n",
        5,
        "wf.tasks.t.join",
        "join must be",
    ),
    (
        "with_items_syntax",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      with-items:\n        - x over <% $.l %>\n",
        6,
        "wf.tasks.t.with-items[0]",
        "is not 'x in <list or expression>'",
    ),
    (
        "with_items_not_a_list",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      with-items: x in 5\n",
        5,
        "wf.tasks.t.with-items",
        "must be a list or an expression",
    ),
    (
        "bad_yaql",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      publish:\n        x: <% $.a + %>\n",
        6,
        "wf.tasks.t.publish.x",
        "YAQL syntax error",
    ),
    (
        "bad_jinja_in_guard",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      on-success:\n        - u: '{{ _.a + }}'\n"
        "    u: {}\n",
        6,
        "wf.tasks.t.on-success[0]",
        "Jinja syntax error",
    ),
    (
        "bad_inline_expression",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      action: std.echo output=<% ( %>\n",
        5,
        "wf.tasks.t.action",
        "YAQL syntax error",
    ),
    (
        "bad_inline_syntax",
        "version: '2.0'\nwf:\n  tasks:\n    t:\n      action: std.echo output\n",
        5,
        "wf.tasks.t.action",
        "expected name=value",
    ),
    (
        "no_start_task",
        "version: '2.0'\nwf:\n  tasks:\n    a:\n      on-success: b\n    b:\n      on-success: a\n",
        4,
        "wf.tasks",
        "no start task",
    ),
    (
        "requires_unknown",
        "version: '2.0'\nwf:\n  type: reverse\n  tasks:\n    a:\n      requires: [ghost]\n",
        6,
        "wf.tasks.a.requires",
        "no task named 'ghost'",
    ),
    (
        "requires_cycle",
        "version: '2.0'\nwf:\n  type: reverse\n  tasks:\n    a:\n      requires: b\n"
        "    b:\n      requires: c\n    c:\n      requires: a\n",
        5,
        "wf.tasks.a.requires",
        "cycle: a -> b -> c -> a",
    ),
    (
        "on_success_in_reverse",
        "version: '2.0'\nwf:\n  type: reverse\n  tasks:\n    a:\n      on-success: a\n",
        6,
        "wf.tasks.a.on-success",
        "reverse workflow",
    ),
    (
        "requires_in_direct",
        "version: '2.0'\nwf:\n  tasks:\n    a: {}\n    b:\n      requires: a\n",
        6,
        "wf.tasks.b.requires",
        "reverse workflows",
    ),
    (
        "duplicate_task",
        "version: '2.0'\nwf:\n  tasks:\n    a: {}\n    a: {}\n",
        5,
        "wf.tasks.a",
        "duplicate key 'a'",
    ),
    (
        "duplicate_nested_key",
        "version: '2.0'\nwf:\n  tasks:\n    a:\n      input:\n        x: 1\n        x: 2\n",
        7,
        "wf.tasks.a.input.x",
        "duplicate key 'x'",
    ),
    (
        "anchor",
        "version: '2.0'\nwf:\n  vars: &v {a: 1}\n  tasks:\n    a: {}\n",
        3,
        "",
        "anchors and aliases",
    ),
    (
        "python_tag",
        "version: '2.0'\nwf:\n  vars:\n    a: !!python/name:os.system x\n  tasks:\n    a: {}\n",
        4,
        "wf.vars.a",
        "YAML tag",
    ),
    (
        "workbook",
        "version: '2.0'\nname: book\nworkflows:\n  wf:\n    tasks:\n      a: {}\n",
        3,
        "workflows",
        "workbooks are not supported",
    ),
    ("no_version", "wf:\n  tasks:\n    a: {}\n", 1, "version", "missing"),
    ("version_1", "version: '1.0'\nwf:\n  tasks:\n    a: {}\n", 1, "version", "'2.0'"),
    (
        "engine_command_as_task",
        "version: '2.0'\nwf:\n  tasks:\n    fail: {}\n",
        4,
        "wf.tasks.fail",
        "engine command",
    ),
    (
        "params_on_a_task",
        "version: '2.0'\nwf:\n  tasks:\n    a:\n      on-success: b(x=1)\n    b: {}\n",
        5,
        "wf.tasks.a.on-success",
        "only the engine commands take parameters",
    ),
    (
        "input_not_a_list",
        "version: '2.0'\nwf:\n  input: {a: 1}\n  tasks:\n    a: {}\n",
        3,
        "wf.input",
        "must be a list",
    ),
    (
        "input_twice",
        "version: '2.0'\nwf:\n  input:\n    - a\n    - a: 2\n  tasks:\n    a: {}\n",
        5,
        "wf.input[1]",
        "declared twice",
    ),
    (
        "inline_and_input_clash",
        "version: '2.0'\nwf:\n  tasks:\n    a:\n      action: std.echo output=1\n"
        "      input:\n        output: 2\n",
        7,
        "wf.tasks.a.input.output",
        "also given inline",
    ),
    (
        "global_publish",
        "version: '2.0'\nwf:\n  tasks:\n    a:\n      on-success:\n        publish:\n"
        "          global:\n            x: 1\n",
        7,
        "wf.tasks.a.on-success.publish.global",
        "only 'branch' publishing",
    ),
    (
        "no_tasks",
        "version: '2.0'\nwf:\n  tasks: {}\n",
        3,
        "wf.tasks",
        "at least one task",
    ),
    ("bad_yaml", "version: '2.0'\nwf:\n  tasks: [\n", 4, "", "invalid YAML"),
    ("not_a_mapping", "version: '2.0'\nwf: 3\n", 2, "wf", "must be a mapping"),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "problem"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_validation_problem_names_line_and_path(
    text: str, line: int, path: str, problem: str
) -> None:
    err = _refused(text)
    assert problem in err.problem
    assert (err.line, err.path) == (line, path)
    assert str(err).startswith(f"line {line}: ")


def test_billion_laughs_is_refused_without_expanding() -> None:
    lines = ["version: '2.0'", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    err = _refused("\n".join(lines) + "\n")
    assert err.line == 2
    assert "anchors and aliases" in err.problem


def test_bounds_on_size_depth_tasks_and_workflows() -> None:
    assert "larger than" in _refused("#" * (MAX_TEXT + 1)).problem

    deep = "version: '2.0'\nwf:\n  vars:\n    x: " + "[" * 40 + "]" * 40 + "\n"
    err = _refused(deep)
    assert err.line == 4
    assert "nesting deeper than 32" in err.problem

    tasks = "".join(f"    t{i}: {{}}\n" for i in range(MAX_TASKS + 1))
    err = _refused("version: '2.0'\nwf:\n  tasks:\n" + tasks)
    assert (err.line, err.path) == (4 + MAX_TASKS, f"wf.tasks.t{MAX_TASKS}")

    workflows = "".join(f"w{i}:\n  tasks:\n    a: {{}}\n" for i in range(101))
    err = _refused("version: '2.0'\n" + workflows)
    assert err.path == "w100"
    assert "more than 100 workflows" in err.problem


def test_a_task_may_hold_500_tasks_and_a_file_100_workflows() -> None:
    tasks = "".join(f"    t{i}: {{}}\n" for i in range(MAX_TASKS))
    assert len(_parse("version: '2.0'\nwf:\n  tasks:\n" + tasks)["wf"].tasks) == MAX_TASKS
    workflows = "".join(f"w{i}:\n  tasks:\n    a: {{}}\n" for i in range(100))
    assert len(_parse("version: '2.0'\n" + workflows)) == 100
