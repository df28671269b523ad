"""Mistral's v2 wire shapes: the JSON of workflows, executions, task executions, action
executions and actions as Mistral's clients read them; the bodies they send (bounded,
each error naming its field); paging, sorting and the `fields` filter of the lists.

What Mistral's clients rely on: values that may be any JSON (an execution's input,
output and params, a task's result, published and runtime context, an action's input
and output) travel as JSON *text* inside the JSON, timestamps as `YYYY-MM-DD HH:MM:SS`
in UTC, a list is `{"<kind>": [...], "next": "<url of the next page>"}` with `next`
only when the page is full, and an error carries `faultstring` at the top, which is all
python-mistralclient shows of it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from opendoctor.api.bounds import MAX_DEPTH, too_deep
from opendoctor.core.errors import RequestError
from opendoctor.core.workflows import (
    ActionExecution,
    Execution,
    TaskExecution,
    WorkflowDefinition,
)
from opendoctor.workflow.actions import ActionDef
from opendoctor.workflow.spec import WorkflowSpec

MAX_TEXT = 1_048_576  # a definition file, as text
MAX_LIMIT = 1000
MAX_NAME = 255  # what the store keeps of a name or a namespace
MAX_DESCRIPTION = 255  # Mistral's own bound

# --- path and query parameters -----------------------------------------------------------

Id = Annotated[str, Path(min_length=1, max_length=36, description="the id")]
WorkflowIdent = Annotated[
    str, Path(min_length=1, max_length=MAX_NAME, description="the workflow's id or name")
]
ActionName = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="the name")]
Namespace = Annotated[
    str, Query(max_length=MAX_NAME, description="the workflow's namespace ('': the default)")
]
Scope = Annotated[
    str, Query(pattern="^(private|public)$", description="private (the project's) or public")
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description=f"at most this many (≤ {MAX_LIMIT})")
]
Marker = Annotated[
    str | None, Query(max_length=MAX_NAME, description="the last id of the page before")
]
SortKeys = Annotated[
    str, Query(max_length=200, description="created_at (then id): the only order kept")
]
SortDirs = Annotated[str, Query(max_length=200, description="asc or desc, for created_at")]
Fields = Annotated[
    str, Query(max_length=1000, description="comma-separated fields to show (id always)")
]
StateFilter = Annotated[
    str | None,
    Query(max_length=40, description="only in this state (`eq:` prefix taken too)"),
]
IdFilter = Annotated[str | None, Query(max_length=40, description="only those of this id")]
NameFilter = Annotated[str | None, Query(max_length=MAX_NAME + 3, description="only this name")]

# --- errors, as the OpenAPI document declares them ----------------------------------------

Responses = dict[int | str, dict[str, Any]]
E404: Responses = {404: {"description": "no such resource (another project's answers the same)"}}
E409: Responses = {
    409: {"description": "in conflict with what is stored (a name taken, a run over)"}
}
E413: Responses = {413: {"description": f"a definition over {MAX_TEXT} bytes"}}
E429: Responses = {
    429: {"description": "the engine runs as many executions as it may; retry later"}
}
E503: Responses = {503: {"description": "this process runs no workflow engine"}}


# --- values ---------------------------------------------------------------------------------


def when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def as_text(value: Any) -> str:
    """A JSON value as the JSON text Mistral puts in its place."""
    return json.dumps(value, default=str)


def filter_value(value: str | None, field: str) -> str | None:
    """A list filter, plain or as Mistral's `eq:value`; other operators are refused."""
    if value is None:
        return None
    op, sep, rest = value.partition(":")
    if sep and op in ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "has"):
        if op != "eq":
            raise RequestError(400, f"only equality filters are served, not {op!r}", field)
        return rest
    return value


def state_filter(value: str | None, field: str, states: tuple[str, ...]) -> str | None:
    found = filter_value(value, field)
    if found is not None and found not in states:
        raise RequestError(400, f"{found!r} is not one of {', '.join(states)}", field)
    return found


def json_object(value: Any, field: str, limit: int) -> dict[str, Any]:
    """A mapping given as JSON text (as mistralclient sends it) or as an object."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        if len(value.encode()) > limit:
            raise RequestError(400, f"larger than {limit} bytes", field)
        # JSON inside a string: the body's own depth check (api.bounds) did not see it.
        if too_deep(value.encode()):
            raise RequestError(400, f"the JSON nests deeper than {MAX_DEPTH} levels", field)
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RequestError(400, f"not JSON: {exc}", field) from None
        if value is None:
            return {}
    if not isinstance(value, dict):
        raise RequestError(400, f"must be a JSON object, not {type(value).__name__}", field)
    if len(json.dumps(value, default=str).encode()) > limit:
        raise RequestError(400, f"larger than {limit} bytes", field)
    return value


# --- bodies ---------------------------------------------------------------------------------

EXECUTION_CHANGES = ("RUNNING", "PAUSED", "SUCCESS", "ERROR", "CANCELLED")


class ExecutionIn(BaseModel):
    """A new execution, as `mistral execution-create` sends it."""

    model_config = ConfigDict(extra="forbid")

    workflow_name: str | None = Field(None, min_length=1, max_length=MAX_NAME)
    workflow_id: str | None = Field(None, min_length=1, max_length=36)
    workflow_namespace: str = Field("", max_length=MAX_NAME)
    source_execution_id: str | None = Field(
        None, min_length=1, max_length=36, description="run again with that one's input"
    )
    input: str | dict[str, Any] | None = Field(
        None, description="the workflow's input: a JSON object, or its text"
    )
    params: str | dict[str, Any] | None = Field(
        None, description="env, task_name (reverse workflows): a JSON object, or its text"
    )
    description: str = Field("", max_length=MAX_DESCRIPTION)


class ExecutionChange(BaseModel):
    """A change of an execution: its state (pause, resume, cancel, fail, succeed), its
    description."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=36, description="if given, the path's id")
    state: str | None = Field(
        None,
        pattern="^(" + "|".join(EXECUTION_CHANGES) + ")$",
        description=f"one of {', '.join(EXECUTION_CHANGES)}",
    )
    state_info: str | None = Field(None, max_length=4096)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    params: dict[str, Any] | None = Field(
        None, description="not served: an execution's env is fixed when it starts"
    )


# --- views ----------------------------------------------------------------------------------


def workflow_view(d: WorkflowDefinition) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "namespace": d.namespace,
        "input": d.input,
        "definition": d.definition,
        "tags": list(d.tags),
        "scope": d.scope,
        "project_id": d.project_id or "<default-project>",
        "is_system": d.builtin,
        "created_at": when(d.created_at),
        "updated_at": when(d.updated_at),
    }


def _run_record(r: Execution | TaskExecution | ActionExecution) -> dict[str, Any]:
    """What executions, task and action executions show alike."""
    return {
        "id": r.id,
        "workflow_name": r.workflow_name,
        "tags": [],
        "state": r.state,
        "state_info": r.state_info,
        "project_id": r.project_id,
        "created_at": when(r.created_at),
        "updated_at": when(r.updated_at),
    }


def execution_view(e: Execution) -> dict[str, Any]:
    return _run_record(e) | {
        "workflow_id": e.workflow_id,
        "workflow_namespace": e.workflow_namespace,
        "description": e.description,
        "params": as_text(e.params),
        "task_execution_id": e.task_execution_id,
        "root_execution_id": e.root_execution_id,
        "input": as_text(e.input),
        "output": as_text(e.output),
    }


def graph_view(spec: WorkflowSpec) -> dict[str, Any]:
    """A workflow's tasks and the transitions between them, for the dashboard to draw.
    `on`: on-success, on-error or on-complete (a direct workflow), or requires (a reverse
    one: from the task required to the task requiring it). A target that is no task is
    an engine command (succeed, fail, pause)."""
    tasks = [
        {"name": t.name, "action": t.action, "workflow": t.workflow} for t in spec.tasks.values()
    ]
    transitions: list[dict[str, Any]] = []
    for t in spec.tasks.values():
        if spec.type == "reverse":
            transitions += [
                {"source": r, "target": t.name, "on": "requires", "guard": None} for r in t.requires
            ]
            continue
        for on, given in (
            ("on-success", t.on_success),
            ("on-error", t.on_error),
            ("on-complete", t.on_complete),
        ):
            transitions += [
                {"source": t.name, "target": tr.target, "on": on, "guard": tr.guard} for tr in given
            ]
    return {"type": spec.type, "tasks": tasks, "transitions": transitions}


def task_view(t: TaskExecution, namespace: str) -> dict[str, Any]:
    return _run_record(t) | {
        "name": t.name,
        "type": t.type,
        "workflow_namespace": namespace,
        "workflow_id": t.workflow_id,
        "workflow_execution_id": t.execution_id,
        "result": as_text(t.result),
        "published": as_text(t.published),
        "runtime_context": as_text(t.runtime_context),
        "processed": t.processed,
        "reset": False,
        "started_at": when(t.started_at),
        "finished_at": when(t.finished_at),
    }


def action_execution_view(a: ActionExecution, namespace: str) -> dict[str, Any]:
    return _run_record(a) | {
        "name": a.name,
        "workflow_namespace": namespace,
        "task_name": a.task_name,
        "task_execution_id": a.task_execution_id,
        "accepted": a.accepted,
        "description": "",
        "input": as_text(a.input),
        # Mistral keeps an action's outcome under "result" (the CLI's get-output shows it).
        "output": as_text({"result": a.output}),
        "params": "{}",
    }


_ACTIONS = uuid.UUID("5f0f3c52-6d0e-4f55-9a5e-3ad1b1f0c0de")


def action_view(d: ActionDef) -> dict[str, Any]:
    return {
        # Stable across restarts and processes: the registry is code, not stored rows.
        "id": str(uuid.uuid5(_ACTIONS, d.name)),
        "name": d.name,
        "is_system": True,
        "input": d.signature(),
        "description": d.description,
        "tags": [],
        "scope": "public",
        "namespace": "",
        "project_id": "<default-project>",
        "created_at": None,
        "updated_at": None,
    }


# --- lists ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    marker: str | None
    descending: bool
    fields: tuple[str, ...]


def paging(
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
) -> Paging:
    """The page asked for. Lists are kept in creation order (ties by id), so that is the
    one order served, either way."""
    keys = [k.strip() for k in sort_keys.split(",") if k.strip()] or ["created_at"]
    dirs = [d.strip().lower() for d in sort_dirs.split(",") if d.strip()] or ["asc"]
    if keys[0] != "created_at" or any(k not in ("created_at", "id") for k in keys):
        raise RequestError(
            400, f"{sort_keys!r}: lists are sorted by created_at (then id) only", "sort_keys"
        )
    if any(d not in ("asc", "desc") for d in dirs):
        raise RequestError(400, f"{sort_dirs!r}: each direction is asc or desc", "sort_dirs")
    shown = tuple(f.strip() for f in fields.split(",") if f.strip())
    return Paging(limit or MAX_LIMIT, marker or None, dirs[0] == "desc", shown)


# One dependency for the paging and sorting parameters, so that every list takes them alike.
Page = Annotated[Paging, Depends(paging)]


def listed(
    request: Request, kind: str, views: list[dict[str, Any]], page: Paging, last: str | None
) -> dict[str, Any]:
    """`{kind: [...]}`, and `next` when the page was full (`last`: the id of its last
    item before any filtering here, so that the next page starts after it)."""
    if page.fields:
        wanted = {"id", *page.fields}
        views = [{k: v for k, v in view.items() if k in wanted} for view in views]
    body: dict[str, Any] = {kind: views}
    if last is not None:
        body["next"] = str(request.url.include_query_params(marker=last, limit=page.limit))
    return body
