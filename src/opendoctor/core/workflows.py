"""Workflow records: definitions, executions, task executions and action executions.

The words and states are Mistral's (v2), so that its clients and its operators read them
as they are used to. A workflow definition is the text an operator wrote; an execution is
one run of it; each task of the run has a task execution, and each call of an action
(one per attempt, one per item of a `with-items`) an action execution. Every field here
is stored: an execution is resumed from these records alone after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from opendoctor.core.model import new_id

# Execution states (Mistral's). IDLE: stored, not started yet (or waiting for an engine).
ExecutionState = Literal["IDLE", "RUNNING", "PAUSED", "SUCCESS", "ERROR", "CANCELLED"]
EXECUTION_STATES: tuple[str, ...] = ("IDLE", "RUNNING", "PAUSED", "SUCCESS", "ERROR", "CANCELLED")

# Task states. WAITING: a join not yet satisfied; RUNNING_DELAYED: a timer runs (wait-before,
# wait-after, a retry's delay); PAUSED: held by pause-before until the execution resumes.
TaskState = Literal[
    "IDLE", "WAITING", "RUNNING", "RUNNING_DELAYED", "PAUSED", "SUCCESS", "ERROR", "CANCELLED"
]
TASK_STATES: tuple[str, ...] = (
    "IDLE",
    "WAITING",
    "RUNNING",
    "RUNNING_DELAYED",
    "PAUSED",
    "SUCCESS",
    "ERROR",
    "CANCELLED",
)
ActionState = Literal["RUNNING", "SUCCESS", "ERROR", "CANCELLED"]

FINISHED: frozenset[str] = frozenset({"SUCCESS", "ERROR", "CANCELLED"})

Scope = Literal["private", "public"]


@dataclass(slots=True)
class WorkflowDefinition:
    """One workflow of a definition text (a file may hold several; each is stored with the
    whole text it came from, as Mistral does)."""

    name: str
    definition: str
    project_id: str
    namespace: str = ""
    scope: Scope = "private"
    tags: list[str] = field(default_factory=list)
    # The input's names with their defaults, as Mistral shows them: "a, b=1".
    input: str = ""
    # Built in (shipped with opendoctor): listed for everyone, replaced by a workflow of
    # the same name that an operator adds, never deleted.
    builtin: bool = False
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None


@dataclass(slots=True)
class Execution:
    workflow_name: str
    workflow_id: str
    project_id: str
    # The definition text of the workflow as it was when the execution started: a later
    # change to the workflow does not change a run under way (nor one resumed after a
    # restart).
    spec: str
    input: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    workflow_namespace: str = ""
    description: str = ""
    state: ExecutionState = "IDLE"
    state_info: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    # The variables every task starts from: the input with its defaults, and `vars`.
    context: dict[str, Any] = field(default_factory=dict)
    # A sub-workflow's execution names the task that started it and the top execution.
    task_execution_id: str | None = None
    root_execution_id: str | None = None
    # Started by an admin or by a rule template: it may call the actions that act on the
    # infrastructure (`vim.*`, `nova.*`, `fence.*`, `notify`); its sub-workflows inherit it.
    privileged: bool = False
    # The engine (process) running it; another takes it over when this one's lease ends.
    owner: str | None = None
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None


@dataclass(slots=True)
class TaskExecution:
    execution_id: str
    name: str
    workflow_name: str
    workflow_id: str
    project_id: str
    type: Literal["ACTION", "WORKFLOW"] = "ACTION"
    state: TaskState = "IDLE"
    state_info: str | None = None
    # The context the task started from (its branch's variables) and what it published.
    in_context: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    # The engine's bookkeeping that must survive a restart: the retry count, with-items
    # progress, the instant a timer is due, which inbound tasks a join has seen.
    runtime_context: dict[str, Any] = field(default_factory=dict)
    # Whether the transitions after this task were decided (its successors created): a
    # finished task whose successors are decided is never looked at again.
    processed: bool = False
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class ActionExecution:
    name: str
    task_execution_id: str | None
    execution_id: str | None
    project_id: str
    task_name: str = ""
    workflow_name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    state: ActionState = "RUNNING"
    state_info: str | None = None
    accepted: bool = False
    # Which item of a with-items task, and which attempt of a retried one.
    index: int = 0
    attempt: int = 0
    id: str = field(default_factory=new_id)
    created_at: float = 0.0
    updated_at: float | None = None
