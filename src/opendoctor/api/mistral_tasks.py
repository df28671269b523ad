"""`/v2/tasks`, `/v2/action_executions` and `/v2/actions` of the Mistral-compatible API:
what each execution's tasks did, each call of an action, and the actions a task may
call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import Request

from opendoctor.api.mistral_routing import (
    Caller,
    namespaces_of,
    new_router,
    project_of,
    visible_execution,
    workflows_of,
)
from opendoctor.api.mistral_schema import (
    E404,
    MAX_LIMIT,
    ActionName,
    Fields,
    Id,
    IdFilter,
    Limit,
    Marker,
    NameFilter,
    Paging,
    SortDirs,
    SortKeys,
    StateFilter,
    action_execution_view,
    action_view,
    filter_value,
    listed,
    paging,
    state_filter,
    task_view,
)
from opendoctor.api.native import known_marker, page_in_memory
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.workflows import TASK_STATES

router = new_router()
# Newest first is served by reading a list whole: past this many, narrow it or go oldest
# first.
MAX_SCAN = 10_000
ACTION_STATES = ("RUNNING", "SUCCESS", "ERROR", "CANCELLED")

# --- tasks and action executions ------------------------------------------------------------


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


async def _page(
    fetch: Callable[[int, str | None], Awaitable[list[T]]], page: Paging, field: str
) -> tuple[list[T], str | None]:
    """A page of a list kept oldest first, in the order asked for: newest first reads it
    whole (up to MAX_SCAN). Also the id to page on from, when the page is full."""
    if not page.descending:
        with known_marker():
            items = await fetch(page.limit, page.marker)
        return items, items[-1].id if len(items) == page.limit else None
    items, after = [], None
    while True:
        chunk = await fetch(MAX_LIMIT, after)
        items.extend(chunk)
        if len(chunk) < MAX_LIMIT:
            break
        if len(items) >= MAX_SCAN:
            raise RequestError(
                400, f"more than {MAX_SCAN} to sort newest first: filter by {field}", "sort_dirs"
            )
        after = chunk[-1].id
    items.reverse()
    if page.marker is not None:
        at = next((i for i, item in enumerate(items) if item.id == page.marker), None)
        if at is None:
            raise RequestError(400, f"no item {page.marker!r} to page after", "marker")
        items = items[at + 1 :]
    items = items[: page.limit]
    return items, items[-1].id if len(items) == page.limit else None


async def _tasks(
    request: Request,
    identity: Identity,
    page: Paging,
    execution_id: str | None,
    state: str | None,
    name: str | None,
) -> dict[str, Any]:
    ws = workflows_of(request)
    state = state_filter(state, "state", TASK_STATES)
    name = filter_value(name, "name")

    async def fetch(limit: int, marker: str | None) -> list[Any]:
        return await ws.store.tasks(project_of(identity), limit, marker, execution_id, state, name)

    tasks, last = await _page(fetch, page, "workflow_execution_id")
    spaces = await namespaces_of(ws, {t.execution_id for t in tasks})
    return listed(
        request, "tasks", [task_view(t, spaces[t.execution_id]) for t in tasks], page, last
    )


@router.get("/tasks", summary="List task executions", responses=E404)
async def list_tasks(
    request: Request,
    identity: Caller,
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
    workflow_execution_id: IdFilter = None,
    state: StateFilter = None,
    name: NameFilter = None,
) -> dict[str, Any]:
    page = paging(limit, marker, sort_keys, sort_dirs, fields)
    execution_id = filter_value(workflow_execution_id, "workflow_execution_id")
    return await _tasks(request, identity, page, execution_id, state, name)


@router.get("/executions/{id}/tasks", summary="List an execution's tasks", responses=E404)
async def list_execution_tasks(
    request: Request,
    id: Id,
    identity: Caller,
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
    state: StateFilter = None,
    name: NameFilter = None,
) -> dict[str, Any]:
    page = paging(limit, marker, sort_keys, sort_dirs, fields)
    await visible_execution(workflows_of(request), identity, id)
    return await _tasks(request, identity, page, id, state, name)


@router.get("/tasks/{id}", summary="Show a task execution", responses=E404)
async def get_task(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    ws = workflows_of(request)
    task = await ws.store.task(id)
    if task is None or not identity.can_see(task.project_id):
        raise RequestError(404, f"no task execution {id}", "id")
    return task_view(task, (await namespaces_of(ws, {task.execution_id}))[task.execution_id])


async def _action_executions(
    request: Request, identity: Identity, page: Paging, task_id: str | None, state: str | None
) -> dict[str, Any]:
    ws = workflows_of(request)
    state = state_filter(state, "state", ACTION_STATES)

    async def fetch(limit: int, marker: str | None) -> list[Any]:
        return await ws.store.action_executions(
            project_of(identity), limit, marker, task_execution_id=task_id, state=state
        )

    actions, last = await _page(fetch, page, "task_execution_id")
    spaces = await namespaces_of(ws, {a.execution_id for a in actions if a.execution_id})
    views = [action_execution_view(a, spaces.get(a.execution_id or "", "")) for a in actions]
    return listed(request, "action_executions", views, page, last)


@router.get("/action_executions", summary="List action executions", responses=E404)
async def list_action_executions(
    request: Request,
    identity: Caller,
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
    task_execution_id: IdFilter = None,
    state: StateFilter = None,
) -> dict[str, Any]:
    page = paging(limit, marker, sort_keys, sort_dirs, fields)
    task_id = filter_value(task_execution_id, "task_execution_id")
    return await _action_executions(request, identity, page, task_id, state)


@router.get(
    "/tasks/{id}/action_executions", summary="List a task's action executions", responses=E404
)
async def list_task_action_executions(
    request: Request,
    id: Id,
    identity: Caller,
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
    state: StateFilter = None,
) -> dict[str, Any]:
    page = paging(limit, marker, sort_keys, sort_dirs, fields)
    task = await workflows_of(request).store.task(id)
    if task is None or not identity.can_see(task.project_id):
        raise RequestError(404, f"no task execution {id}", "id")
    return await _action_executions(request, identity, page, id, state)


@router.get("/action_executions/{id}", summary="Show an action execution", responses=E404)
async def get_action_execution(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    ws = workflows_of(request)
    found = await ws.store.action_execution(id)
    if found is None or not identity.can_see(found.project_id):
        raise RequestError(404, f"no action execution {id}", "id")
    spaces = await namespaces_of(ws, {found.execution_id} if found.execution_id else set())
    return action_execution_view(found, spaces.get(found.execution_id or "", ""))


# --- actions --------------------------------------------------------------------------------


@router.get("/actions", summary="List the actions a task may call")
async def list_actions(
    request: Request,
    identity: Caller,
    limit: Limit = None,
    marker: Marker = None,
    fields: Fields = "",
) -> dict[str, Any]:
    """By name (`marker`: the last name of the page before)."""
    page = paging(limit, marker, "", "", fields)
    defs = workflows_of(request).engine.registry.all()
    shown = page_in_memory(defs, lambda d: d.name, page.limit, page.marker)
    last = shown[-1].name if len(shown) == page.limit else None
    return listed(request, "actions", [action_view(d) for d in shown], page, last)


@router.get("/actions/{name}", summary="Show an action", responses=E404)
@router.get("/actions/{name}/", include_in_schema=False)
@router.get("/actions/{name}/{namespace}", include_in_schema=False)
async def get_action(
    request: Request, name: ActionName, identity: Caller, namespace: str = ""
) -> dict[str, Any]:
    found = workflows_of(request).engine.registry.get(name)
    if found is None or namespace:
        raise RequestError(404, f"no action {name!r}", "name")
    return action_view(found)
