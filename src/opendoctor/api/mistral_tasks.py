"""`/v2/tasks`, `/v2/action_executions` and `/v2/actions` of the Mistral-compatible API:
what each execution's tasks did, each call of an action, and the actions a task may
call."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from opendoctor.api.mistral_routing import (
    Caller,
    new_router,
    project_of,
    read_page,
    visible,
    visible_execution,
    visible_task,
    with_namespaces,
    workflows_of,
)
from opendoctor.api.mistral_schema import (
    E404,
    ActionName,
    Fields,
    Id,
    IdFilter,
    Limit,
    Marker,
    NameFilter,
    Page,
    Paging,
    StateFilter,
    action_execution_view,
    action_view,
    filter_value,
    listed,
    paging,
    state_filter,
    task_view,
)
from opendoctor.api.native import page_in_memory
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.workflows import TASK_STATES

router = new_router()
ACTION_STATES = ("RUNNING", "SUCCESS", "ERROR", "CANCELLED")

# --- tasks and action executions ------------------------------------------------------------


async def _tasks(
    request: Request,
    identity: Identity,
    page: Paging,
    execution_id: str | None,
    state: str | None,
    name: str | None,
) -> dict[str, Any]:
    ws = workflows_of(request)
    reading = ws.store.tasks(
        project_of(identity),
        page.limit,
        page.marker,
        execution_id,
        state_filter(state, "state", TASK_STATES),
        filter_value(name, "name"),
        descending=page.descending,
    )
    tasks, last = await read_page(page, reading)
    return listed(request, "tasks", await with_namespaces(ws, tasks, task_view), page, last)


@router.get("/tasks", summary="List task executions", responses=E404)
async def list_tasks(
    request: Request,
    identity: Caller,
    page: Page,
    workflow_execution_id: IdFilter = None,
    state: StateFilter = None,
    name: NameFilter = None,
) -> dict[str, Any]:
    execution_id = filter_value(workflow_execution_id, "workflow_execution_id")
    return await _tasks(request, identity, page, execution_id, state, name)


@router.get("/executions/{id}/tasks", summary="List an execution's tasks", responses=E404)
async def list_execution_tasks(
    request: Request,
    id: Id,
    identity: Caller,
    page: Page,
    state: StateFilter = None,
    name: NameFilter = None,
) -> dict[str, Any]:
    await visible_execution(workflows_of(request), identity, id)
    return await _tasks(request, identity, page, id, state, name)


@router.get("/tasks/{id}", summary="Show a task execution", responses=E404)
async def get_task(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    ws = workflows_of(request)
    [view] = await with_namespaces(ws, [await visible_task(ws, identity, id)], task_view)
    return view


async def _action_executions(
    request: Request, identity: Identity, page: Paging, task_id: str | None, state: str | None
) -> dict[str, Any]:
    ws = workflows_of(request)
    reading = ws.store.action_executions(
        project_of(identity),
        page.limit,
        page.marker,
        task_execution_id=task_id,
        state=state_filter(state, "state", ACTION_STATES),
        descending=page.descending,
    )
    actions, last = await read_page(page, reading)
    views = await with_namespaces(ws, actions, action_execution_view)
    return listed(request, "action_executions", views, page, last)


@router.get("/action_executions", summary="List action executions", responses=E404)
async def list_action_executions(
    request: Request,
    identity: Caller,
    page: Page,
    task_execution_id: IdFilter = None,
    state: StateFilter = None,
) -> dict[str, Any]:
    task_id = filter_value(task_execution_id, "task_execution_id")
    return await _action_executions(request, identity, page, task_id, state)


@router.get(
    "/tasks/{id}/action_executions", summary="List a task's action executions", responses=E404
)
async def list_task_action_executions(
    request: Request,
    id: Id,
    identity: Caller,
    page: Page,
    state: StateFilter = None,
) -> dict[str, Any]:
    await visible_task(workflows_of(request), identity, id)
    return await _action_executions(request, identity, page, id, state)


@router.get("/action_executions/{id}", summary="Show an action execution", responses=E404)
async def get_action_execution(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    ws = workflows_of(request)
    found = visible(identity, await ws.store.action_execution(id), "action execution", id)
    [view] = await with_namespaces(ws, [found], action_execution_view)
    return view


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
