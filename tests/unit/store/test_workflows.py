"""Workflow definitions, executions, task and action executions in the store, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opendoctor.core.workflows import (
    ActionExecution,
    Execution,
    TaskExecution,
    WorkflowDefinition,
)
from opendoctor.store.db import Database
from opendoctor.store.workflows import DefinitionExists, RunWrites, UnknownMarker, WorkflowStore


@pytest.fixture
def store(db: Database) -> WorkflowStore:
    return WorkflowStore(db)


def _execution(at: float = 1.0, **kw: Any) -> Execution:
    values: dict[str, Any] = {
        "workflow_name": "wf",
        "workflow_id": "wf-id",
        "project_id": "p1",
        "spec": "version: '2.0'\nwf: {}",
        "created_at": at,
    }
    return Execution(**(values | kw))


def _task(execution: Execution, name: str = "t", at: float = 1.0, **kw: Any) -> TaskExecution:
    values: dict[str, Any] = {
        "execution_id": execution.id,
        "name": name,
        "workflow_name": execution.workflow_name,
        "workflow_id": execution.workflow_id,
        "project_id": execution.project_id,
        "created_at": at,
    }
    return TaskExecution(**(values | kw))


def _action(task: TaskExecution, at: float = 1.0, **kw: Any) -> ActionExecution:
    values: dict[str, Any] = {
        "name": "std.noop",
        "task_execution_id": task.id,
        "execution_id": task.execution_id,
        "project_id": task.project_id,
        "created_at": at,
    }
    return ActionExecution(**(values | kw))


# --- runs -----------------------------------------------------------------------------------


async def test_every_field_of_a_run_comes_back_as_written(store: WorkflowStore) -> None:
    parent = _execution()
    parent_task = _task(parent, "start-sub", type="WORKFLOW")
    execution = Execution(
        workflow_name="recover",
        workflow_id="def-1",
        project_id="p1",
        spec="version: '2.0'\nrecover:\n  tasks: {}\n",
        input={"host": "compute1", "n": [1, 2.5, None, True]},
        params={"env": {"a": "b"}},
        workflow_namespace="ns",
        description="a run ✓",
        state="RUNNING",
        state_info="going",
        output={"done": False},
        task_execution_id=parent_task.id,
        root_execution_id=parent.id,
        owner="engine-1",
        created_at=1700000000.123456,
        updated_at=1700000001.5,
    )
    task = TaskExecution(
        execution_id=execution.id,
        name="evacuate",
        workflow_name="recover",
        workflow_id="def-1",
        project_id="p1",
        type="ACTION",
        state="RUNNING_DELAYED",
        state_info="retry 2 of 3",
        in_context={"host": "compute1"},
        published={"servers": ["a", "b"]},
        result=[{"id": "a"}, None],
        runtime_context={"retry_no": 2, "due": 1700000005.25, "joined": ["x"]},
        processed=True,
        created_at=1700000000.2,
        updated_at=1700000000.3,
        started_at=1700000000.25,
        finished_at=1700000000.35,
    )
    action = ActionExecution(
        name="vim.evacuate",
        task_execution_id=task.id,
        execution_id=execution.id,
        project_id="p1",
        task_name="evacuate",
        workflow_name="recover",
        input={"server": "a"},
        output={"result": "ok"},
        state="SUCCESS",
        state_info=None,
        accepted=True,
        index=3,
        attempt=2,
        created_at=1700000000.4,
        updated_at=1700000000.5,
    )
    await store.write(RunWrites([parent, execution], [parent_task, task], [action]))

    assert await store.execution(execution.id) == execution
    assert await store.task(task.id) == task
    assert await store.action_execution(action.id) == action
    got = await store.task(task.id)
    assert got is not None and got.processed is True
    got_action = await store.action_execution(action.id)
    assert got_action is not None and got_action.accepted is True
    assert await store.run(execution.id) == (execution, [task], [action])
    assert await store.run(parent.id) == (parent, [parent_task], [])
    assert await store.run("nope") is None
    assert await store.runs([execution.id, "nope", parent.id, execution.id]) == {
        execution.id: (execution, [task], [action]),
        parent.id: (parent, [parent_task], []),
    }
    assert await store.runs([]) == {}
    assert await store.execution("nope") is None
    assert await store.task("nope") is None
    assert await store.action_execution("nope") is None


async def test_a_run_has_the_actions_of_its_tasks_even_those_not_naming_it(
    store: WorkflowStore,
) -> None:
    execution, other = _execution(), _execution()
    task = _task(execution)
    named = _action(task, at=2.0)
    unnamed = _action(task, at=1.0, execution_id=None)
    # No task: the run's by its execution_id alone.
    taskless = ActionExecution("std.echo", None, execution.id, "p1", created_at=3.0)
    elsewhere = _action(_task(other), at=0.0)
    await store.write(RunWrites([execution, other], [task], [named, unnamed, taskless, elsewhere]))
    run = await store.run(execution.id)
    assert run is not None and run[2] == [unnamed, named, taskless]
    runs = await store.runs([execution.id, other.id])
    assert runs[execution.id][2] == [unnamed, named, taskless]
    assert runs[other.id][2] == [elsewhere]


async def test_a_none_result_reads_back_as_none(store: WorkflowStore) -> None:
    """None and JSON null are one value in Python: a result of None comes back None,
    nulls inside a result stay where they were."""
    execution = _execution()
    tasks = [
        _task(execution, "none", result=None),
        _task(execution, "nested", result={"a": None, "b": [None]}),
        _task(execution, "scalar", result=0),
        _task(execution, "text", result="null"),
        # Bare numbers: SQLite would take them for numbers of its own if not wrapped.
        _task(execution, "big", result=2**62 + 1),
        _task(execution, "float", result=1.5e300),
    ]
    action = _action(tasks[0], output=None)
    await store.write(RunWrites([execution], tasks, [action]))
    run = await store.run(execution.id)
    assert run is not None
    assert {t.name: t.result for t in run[1]} == {
        "none": None,
        "nested": {"a": None, "b": [None]},
        "scalar": 0,
        "text": "null",
        "big": 2**62 + 1,
        "float": 1.5e300,
    }
    assert run[2][0].output is None


async def test_writing_a_record_again_replaces_it_whole(store: WorkflowStore) -> None:
    execution = _execution(owner="e1")
    task = _task(execution, result={"old": 1}, runtime_context={"retry_no": 1})
    action = _action(task)
    await store.write(RunWrites([execution], [task], [action]))

    execution.state, execution.output, execution.updated_at = "SUCCESS", {"x": 1}, 9.0
    execution.owner = None
    task.state, task.result, task.runtime_context = "SUCCESS", [1, 2], {}
    task.finished_at = 8.0
    action.state, action.output, action.attempt = "SUCCESS", "done", 1
    # Two versions of one record in one commit: the last one wins.
    stale = _task(execution, "stale", id=task.id)
    await store.write(RunWrites([execution], [stale, task], [action]))

    assert await store.execution(execution.id) == execution
    assert await store.task(task.id) == task
    assert await store.action_execution(action.id) == action
    assert len(await store.tasks(None, 10)) == 1
    await store.write(RunWrites())  # nothing to write: no transaction, no error
    assert not RunWrites() and RunWrites([execution])


async def test_runs_page_by_creation_with_a_marker_and_filters(store: WorkflowStore) -> None:
    # Two share a creation time: the id orders them, alike on every engine.
    executions = [
        _execution(1.0, id="e-b"),
        _execution(1.0, id="e-a"),
        _execution(2.0, id="e-c", state="SUCCESS", workflow_name="other"),
        _execution(3.0, id="e-d", project_id="p2"),
    ]
    tasks = [_task(executions[0], f"t{i}", at=float(i)) for i in range(5)]
    tasks.append(_task(executions[1], "elsewhere", at=0.5, state="ERROR"))
    actions = [_action(tasks[0], at=float(i), index=i) for i in range(3)]
    actions.append(_action(tasks[1], at=0.0, state="ERROR"))
    await store.write(RunWrites(executions, tasks, actions))

    first = await store.executions(None, 2)
    assert [e.id for e in first] == ["e-a", "e-b"]
    rest = await store.executions(None, 10, marker=first[-1].id)
    assert [e.id for e in rest] == ["e-c", "e-d"]
    newest = await store.executions(None, 2, descending=True)
    assert [e.id for e in newest] == ["e-d", "e-c"]
    older = await store.executions(None, 10, marker="e-c", descending=True)
    assert [e.id for e in older] == ["e-a", "e-b"]
    assert [e.id for e in await store.executions("p1", 10)] == ["e-a", "e-b", "e-c"]
    assert [e.id for e in await store.executions("p2", 10)] == ["e-d"]
    assert [e.id for e in await store.executions(None, 10, state="SUCCESS")] == ["e-c"]
    assert [e.id for e in await store.executions(None, 10, workflow_name="other")] == ["e-c"]
    with pytest.raises(UnknownMarker):
        await store.executions(None, 10, marker="nope")

    page = await store.tasks("p1", 2, execution_id="e-b")
    assert [t.name for t in page] == ["t0", "t1"]
    page = await store.tasks("p1", 10, execution_id="e-b", marker=page[-1].id)
    assert [t.name for t in page] == ["t2", "t3", "t4"]
    assert [t.name for t in await store.tasks(None, 10, state="ERROR")] == ["elsewhere"]
    assert [t.name for t in await store.tasks(None, 10, name="t3")] == ["t3"]
    assert await store.tasks("p2", 10) == []
    with pytest.raises(UnknownMarker):
        await store.tasks(None, 10, marker="nope")

    by_task = await store.action_executions("p1", 2, task_execution_id=tasks[0].id)
    assert [a.index for a in by_task] == [0, 1]
    by_task = await store.action_executions(
        "p1", 10, task_execution_id=tasks[0].id, marker=by_task[-1].id
    )
    assert [a.index for a in by_task] == [2]
    assert len(await store.action_executions(None, 10, execution_id="e-b")) == 4
    errors = await store.action_executions(None, 10, state="ERROR")
    assert [a.task_execution_id for a in errors] == [tasks[1].id]
    assert await store.action_executions("p2", 10) == []


async def test_tasks_and_action_executions_page_newest_first(store: WorkflowStore) -> None:
    execution = _execution()
    # t1 and t2 share a creation time: newest first keeps ties by id, as oldest first does.
    times = [0.0, 1.0, 1.0, 2.0, 3.0]
    tasks = [_task(execution, f"t{i}", at=at, id=f"task-{i}") for i, at in enumerate(times)]
    tasks.append(_task(execution, "theirs", at=9.0, id="task-x", project_id="p2"))
    actions = [_action(tasks[0], at=float(i), id=f"action-{i}", index=i) for i in range(4)]
    await store.write(RunWrites([execution], tasks, actions))

    first = await store.tasks("p1", 2, descending=True)
    assert [t.name for t in first] == ["t4", "t3"]
    rest = await store.tasks("p1", 10, marker=first[-1].id, descending=True)
    assert [t.name for t in rest] == ["t1", "t2", "t0"]
    after_tie = await store.tasks("p1", 10, marker="task-1", descending=True)
    assert [t.name for t in after_tie] == ["t2", "t0"]
    # The same marker pages the other way oldest first.
    assert [t.name for t in await store.tasks("p1", 10, marker="task-2")] == ["t3", "t4"]
    assert [t.name for t in await store.tasks(None, 1, descending=True)] == ["theirs"]
    with pytest.raises(UnknownMarker):
        await store.tasks(None, 10, marker="nope", descending=True)

    newest = await store.action_executions("p1", 3, task_execution_id="task-0", descending=True)
    assert [a.index for a in newest] == [3, 2, 1]
    older = await store.action_executions(
        "p1", 3, task_execution_id="task-0", marker=newest[-1].id, descending=True
    )
    assert [a.index for a in older] == [0]
    later = await store.action_executions("p1", 3, marker=newest[-1].id)
    assert [a.index for a in later] == [2, 3]
    with pytest.raises(UnknownMarker):
        await store.action_executions(None, 10, marker="nope", descending=True)


async def test_executions_are_read_by_ids_at_once(store: WorkflowStore) -> None:
    executions = [_execution(float(i), id=f"e-{i}") for i in range(3)]
    await store.write(RunWrites(executions))
    found = await store.executions_by_ids(["e-2", "e-0", "e-2", "nowhere"])
    assert set(found) == {"e-0", "e-2"}
    assert found["e-2"].created_at == 2.0 and found["e-0"].workflow_name == "wf"
    assert await store.executions_by_ids([]) == {}
    many = await store.executions_by_ids([f"x-{i}" for i in range(1200)] + ["e-1"])
    assert list(many) == ["e-1"]


async def test_deleting_an_execution_takes_its_sub_executions_along(
    store: WorkflowStore,
) -> None:
    top = _execution()
    calls = _task(top, "call-sub", type="WORKFLOW")
    sub = _execution(task_execution_id=calls.id, root_execution_id=top.id)
    sub_task = _task(sub, "inner", type="WORKFLOW")
    subsub = _execution(task_execution_id=sub_task.id, root_execution_id=top.id)
    subsub_task = _task(subsub, "leaf")
    other = _execution()
    other_task = _task(other, "kept")
    records = RunWrites(
        [top, sub, subsub, other],
        [calls, sub_task, subsub_task, other_task],
        [_action(t) for t in (calls, sub_task, subsub_task, other_task)]
        # An action of the run that no task made (task_execution_id None).
        + [ActionExecution("std.echo", None, top.id, "p1")],
    )
    await store.write(records)

    assert await store.delete_execution(top.id) is True
    assert [e.id for e in await store.executions(None, 10)] == [other.id]
    assert [t.id for t in await store.tasks(None, 10)] == [other_task.id]
    remaining = await store.action_executions(None, 10)
    assert [a.task_execution_id for a in remaining] == [other_task.id]
    assert await store.delete_execution(top.id) is False


async def test_of_two_engines_taking_an_execution_over_one_wins(store: WorkflowStore) -> None:
    free = _execution(at=1.0)
    held = _execution(at=2.0, owner="dead")
    await store.write(RunWrites([free, held]))

    results = await asyncio.gather(*(store.claim(free.id, f"e{i}", None) for i in range(2)))
    assert sorted(results) == [False, True]
    winner = "e0" if results[0] else "e1"
    got = await store.execution(free.id)
    assert got is not None and got.owner == winner

    # Taking over from an owner: only from the owner one saw.
    assert await store.claim(held.id, "e1", None) is False
    assert await store.claim(held.id, "e1", "someone-else") is False
    results = await asyncio.gather(*(store.claim(held.id, f"e{i}", "dead") for i in range(2)))
    assert sorted(results) == [False, True]
    holder = "e0" if results[0] else "e1"
    assert await store.claim(held.id, "e2", holder) is True
    assert await store.claim("nope", "e1", None) is False


async def test_claiming_many_takes_only_those_still_of_the_old_owner(
    store: WorkflowStore,
) -> None:
    dead = [_execution(at=float(i), owner="dead") for i in range(4)]
    dead[3].owner = "alive"
    await store.write(RunWrites(dead))
    ids = [e.id for e in dead]
    claims = await asyncio.gather(*(store.claim_many(ids, f"e{i}", "dead") for i in range(2)))
    # Each execution went to one claimer, and only those the dead owner held.
    assert sorted(claims[0] + claims[1]) == sorted(ids[:3])
    assert not set(claims[0]) & set(claims[1])
    owners = {e.id: e.owner for e in [await store.execution(i) for i in ids] if e}
    assert owners[ids[3]] == "alive"
    assert await store.claim_many([], "e0", "dead") == []


async def test_unfinished_executions_by_owner(store: WorkflowStore) -> None:
    nobody = _execution(1.0, state="IDLE")
    mine = _execution(2.0, state="RUNNING", owner="me")
    paused = _execution(3.0, state="PAUSED", owner="me")
    theirs = _execution(4.0, state="RUNNING", owner="them")
    done = [_execution(5.0, state=s, owner="me") for s in ("SUCCESS", "ERROR", "CANCELLED")]
    await store.write(RunWrites([nobody, mine, paused, theirs, *done]))

    ids = [e.id for e in await store.unfinished(["me"])]
    assert ids == [nobody.id, mine.id, paused.id]
    assert [e.id for e in await store.unfinished(None)] == [
        nobody.id,
        mine.id,
        paused.id,
        theirs.id,
    ]
    assert [e.id for e in await store.unfinished([])] == [nobody.id]
    assert [e.id for e in await store.unfinished({"me", "them"}, limit=2)] == [
        nobody.id,
        mine.id,
    ]
    assert sorted(await store.owned("me")) == sorted([mine.id, paused.id])
    assert await store.owned("nobody") == []


async def test_a_nul_in_what_an_action_returned_does_not_fail_the_write(
    store: WorkflowStore, db: Database
) -> None:
    """PostgreSQL keeps no NUL in text: the text columns get U+FFFD in its place there;
    results (json) keep it on both engines."""
    execution = _execution(state="ERROR", state_info="failed: \x00 in body")
    task = _task(
        execution,
        result={"body": "a\x00b", "k\x00": ["\x00"]},
        published={"x": "\x00"},
        state_info="bad\x00",
    )
    action = _action(task, output="\x00", state_info="x\x00y")
    await store.write(RunWrites([execution], [task], [action]))

    run = await store.run(execution.id)
    assert run is not None
    got, (got_task,), (got_action,) = run
    assert got_task.result == {"body": "a\x00b", "k\x00": ["\x00"]}
    assert got_task.published == {"x": "\x00"}
    assert got_action.output == "\x00"
    nul = "\ufffd" if db.engine.dialect.name == "postgresql" else "\x00"
    assert got.state_info == f"failed: {nul} in body"
    assert got_task.state_info == f"bad{nul}"
    assert got_action.state_info == f"x{nul}y"


# --- definitions ----------------------------------------------------------------------------


def _def(name: str, project: str = "p1", at: float = 0.0, **kw: Any) -> WorkflowDefinition:
    text = f"version: '2.0'\n{name}:\n  tasks: {{}}\n"
    return WorkflowDefinition(name=name, definition=text, project_id=project, created_at=at, **kw)


async def test_a_definition_comes_back_as_added_and_a_name_is_taken_once(
    store: WorkflowStore,
) -> None:
    d = _def(
        "recover",
        namespace="ns",
        scope="public",
        tags=["ha", "nova"],
        input="host, force=false",
        updated_at=None,
    )
    await store.add_definitions([d])
    assert d.created_at > 0  # set when not given
    assert await store.definition(d.id, None) == d
    assert await store.definition("recover", "p1", "ns") == d

    with pytest.raises(DefinitionExists, match="recover"):
        await store.add_definitions([_def("new-one"), _def("recover", namespace="ns")])
    # All or nothing: the other one of that batch is not there either.
    assert await store.definition("new-one", "p1") is None
    with pytest.raises(DefinitionExists):
        await store.add_definitions([_def("twice"), _def("twice")])
    assert await store.definition("twice", "p1") is None
    # The same name in another namespace or project is another workflow.
    await store.add_definitions([_def("recover"), _def("recover", "p2", namespace="ns")])


async def test_replacing_a_definition_keeps_its_id_and_creation(store: WorkflowStore) -> None:
    a, b = _def("a", at=1.0), _def("b", at=2.0)
    await store.add_definitions([a, b])
    new_a = _def("a", scope="public", tags=["t"], input="x")
    new_a.definition += "# changed\n"
    replaced = await store.replace_definitions([new_a])
    assert len(replaced) == 1
    got = replaced[0]
    assert (got.id, got.created_at) == (a.id, 1.0)
    assert got.definition == new_a.definition and got.updated_at is not None
    assert (got.scope, got.tags, got.input) == ("public", ["t"], "x")
    assert await store.definition(a.id, None) == got

    changed_b = _def("b", input="changed")
    with pytest.raises(LookupError, match="'missing'"):
        await store.replace_definitions([changed_b, _def("missing")])
    still = await store.definition(b.id, None)
    assert still is not None and still.input == ""  # all or nothing
    with pytest.raises(LookupError):
        await store.replace_definitions([_def("a", "p2")])  # another project's name


async def test_own_wins_over_public_over_builtin_and_the_admin_sees_all(
    store: WorkflowStore,
) -> None:
    builtin = _def("host_recovery", project="x", at=1.0)
    await store.put_builtin([builtin])
    assert (builtin.builtin, builtin.scope, builtin.project_id) == (True, "public", "")

    # Every project sees the shipped one.
    for project in ("p1", "p2", None):
        found = await store.definition("host_recovery", project)
        assert found is not None and found.id == builtin.id
    # p2 publishes its own: p1 sees that one now, in place of the shipped one.
    public = _def("host_recovery", "p2", at=2.0, scope="public")
    # p1 writes its own: it wins for p1 over both.
    own = _def("host_recovery", "p1", at=3.0)
    private = _def("secret", "p2", at=4.0)
    # A project whose id is empty like the shipped ones' may still have its own.
    empty = _def("host_recovery", "", at=5.0)
    await store.add_definitions([public, own, private, empty])

    async def seen(ident: str, project: str | None, namespace: str = "") -> str | None:
        found = await store.definition(ident, project, namespace)
        return None if found is None else found.id

    assert await seen("host_recovery", "p1") == own.id
    assert await seen("host_recovery", "p2") == public.id
    assert await seen("host_recovery", "p3") == public.id
    assert await seen("host_recovery", "") == empty.id
    assert await seen("secret", "p1") is None
    assert await seen(private.id, "p1") is None
    assert await seen(private.id, "p2") == private.id
    assert await seen(own.id, "p2") is None
    assert await seen(builtin.id, "p3") == builtin.id  # by id: the shipped one itself
    # The admin sees everything, by id or by name (the oldest operator's one first).
    assert await seen(private.id, None) == private.id
    assert await seen("secret", None) == private.id
    assert await seen("host_recovery", None) == public.id

    # Listing: what each sees, oldest first, the shadowed shipped one left out.
    def ids(defs: list[WorkflowDefinition]) -> list[str]:
        return [d.id for d in defs]

    assert ids(await store.definitions("p1", 10)) == [public.id, own.id]
    assert ids(await store.definitions("p3", 10)) == [public.id]
    assert ids(await store.definitions(None, 10)) == [
        builtin.id,
        public.id,
        own.id,
        private.id,
        empty.id,
    ]
    page = await store.definitions(None, 2)
    assert ids(page) == [builtin.id, public.id]
    assert ids(await store.definitions(None, 2, marker=page[-1].id)) == [own.id, private.id]
    assert ids(await store.definitions(None, 10, name="secret")) == [private.id]
    assert await store.definitions(None, 10, namespace="ns") == []
    with pytest.raises(UnknownMarker):
        await store.definitions("p1", 10, marker="nope")

    # A shipped one is never deleted; with the others gone it is seen again.
    assert await store.delete_definition(builtin.id) is False
    for d in (public, own):
        assert await store.delete_definition(d.id) is True
    assert await store.delete_definition(own.id) is False
    assert await seen("host_recovery", "p1") == builtin.id
    assert ids(await store.definitions("p1", 10)) == [builtin.id]


async def test_a_name_is_looked_up_in_its_namespace_then_in_the_default_one(
    store: WorkflowStore,
) -> None:
    default = _def("sub", at=1.0)
    spaced = _def("sub", at=2.0, namespace="ns")
    only_default = _def("other", at=3.0)
    await store.add_definitions([default, spaced, only_default])
    found = await store.definition("sub", "p1", "ns")
    assert found is not None and found.id == spaced.id
    found = await store.definition("sub", "p1")
    assert found is not None and found.id == default.id
    found = await store.definition("other", "p1", "ns")
    assert found is not None and found.id == only_default.id
    assert await store.definition("other", "p1", "elsewhere") is not None
    assert await store.definition("nope", "p1") is None


async def test_shipped_definitions_are_upserted_at_each_start(store: WorkflowStore) -> None:
    first = _def("vm_recovery", input="a")
    await store.put_builtin([first])
    got = await store.definition("vm_recovery", "p1")
    assert got is not None and got.updated_at is None

    # The same text again (a restart): not an edit.
    await store.put_builtin([_def("vm_recovery", input="a")])
    got = await store.definition("vm_recovery", "p1")
    assert got is not None and (got.id, got.updated_at) == (first.id, None)

    # A new version of opendoctor ships another text: the row is updated in place.
    newer = _def("vm_recovery", input="a, b=1", tags=["v2"])
    newer.definition += "# v2\n"
    await store.put_builtin([newer])
    got = await store.definition("vm_recovery", "p1")
    assert got is not None
    assert (got.id, got.created_at) == (first.id, first.created_at)
    assert (got.definition, got.input, got.tags) == (newer.definition, "a, b=1", ["v2"])
    assert got.updated_at is not None and got.builtin
    # Adding one of the shipped name is an operator's own, not a conflict.
    await store.add_definitions([_def("vm_recovery", "p1")])
