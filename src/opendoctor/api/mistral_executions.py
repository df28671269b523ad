"""`/v2/executions` of the Mistral-compatible API: start a workflow, list and show its
runs, pause, resume, cancel, fail or succeed one, delete one that is over."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.mistral_routing import (
    Caller,
    Refused,
    deleting,
    new_router,
    project_of,
    read_page,
    visible_execution,
    workflows_of,
)
from opendoctor.api.mistral_schema import (
    E404,
    E409,
    E429,
    MAX_LIMIT,
    ExecutionChange,
    ExecutionIn,
    Id,
    IdFilter,
    NameFilter,
    Page,
    StateFilter,
    execution_view,
    filter_value,
    graph_view,
    json_object,
    listed,
    state_filter,
)
from opendoctor.api.native import service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.workflows import EXECUTION_STATES, FINISHED, Execution
from opendoctor.workflow.engine import Busy, InputError, NotHere
from opendoctor.workflow.service import Workflows
from opendoctor.workflow.spec import SpecError

router = new_router()

# --- executions -----------------------------------------------------------------------------


@router.post(
    "/executions",
    status_code=201,
    summary="Start a workflow",
    responses={**E404, **E409, **E429},
)
async def create_execution(request: Request, body: ExecutionIn, identity: Caller) -> dict[str, Any]:
    """`input` and `params` as JSON objects or their text (mistralclient sends text).
    An input that does not fit the workflow is a 400 and starts nothing."""
    ws = workflows_of(request)
    limit = service_of(request).settings.workflow.max_input_bytes
    given = json_object(body.input, "input", limit)
    params = json_object(body.params, "params", limit)
    ident = body.workflow_id or body.workflow_name
    field = "workflow_id" if body.workflow_id else "workflow_name"
    namespace = body.workflow_namespace
    if body.source_execution_id is not None:
        source = await visible_execution(ws, identity, body.source_execution_id)
        if source.task_execution_id is not None:
            raise RequestError(
                400, "a sub-workflow's execution is not run again alone", "source_execution_id"
            )
        ident = ident or source.workflow_id
        given = given or dict(source.input)
        params = params or dict(source.params)
        namespace = namespace or source.workflow_namespace
    if not ident:
        raise RequestError(400, "give workflow_name or workflow_id", "workflow_name")
    try:
        execution = await ws.start(
            ident,
            given,
            project_of(identity),
            params,
            body.description,
            namespace,
            admin=identity.is_admin,
            run_as=identity.project_id,
        )
    except InputError as exc:
        raise RequestError(400, str(exc), "input") from None
    except Busy as exc:
        raise Refused(429, str(exc), "", {"Retry-After": "1"}) from None
    except SpecError as exc:
        raise RequestError(409, f"the stored workflow no longer validates: {exc}", field) from None
    except LookupError as exc:
        raise RequestError(404, str(exc.args[0]) if exc.args else "not found", field) from None
    audit_target(request, execution.id)
    return execution_view(execution)


@router.get("/executions", summary="List executions", responses=E404)
async def list_executions(
    request: Request,
    identity: Caller,
    page: Page,
    workflow_name: NameFilter = None,
    state: StateFilter = None,
    task_execution_id: IdFilter = None,
    root_execution_id: IdFilter = None,
    nulls: Annotated[
        str, Query(max_length=200, description="fields that must be empty: root_execution_id")
    ] = "",
) -> dict[str, Any]:
    """Oldest first, or newest first (`sort_dirs=desc`, what `mistral execution-list`
    asks for)."""
    empty = {n.strip() for n in nulls.split(",") if n.strip()}
    if not empty <= {"root_execution_id", "task_execution_id"}:
        raise RequestError(400, "only root_execution_id and task_execution_id", "nulls")
    ws = workflows_of(request)
    reading = ws.store.executions(
        project_of(identity),
        page.limit,
        page.marker,
        state=state_filter(state, "state", EXECUTION_STATES),
        workflow_name=filter_value(workflow_name, "workflow_name"),
        task_execution_id=filter_value(task_execution_id, "task_execution_id"),
        root_execution_id=filter_value(root_execution_id, "root_execution_id"),
        descending=page.descending,
    )
    found, last = await read_page(page, reading)
    # Top-level executions (`--rootsonly`) are picked from the page; `next` still
    # follows the page as read.
    kept = [e for e in found if not any(getattr(e, n) for n in empty)]
    return listed(request, "executions", [execution_view(e) for e in kept], page, last)


def _graph(ws: Workflows, execution: Execution) -> dict[str, Any] | None:
    """The tasks and transitions of the workflow as the execution runs it (its own copy
    of the definition); None if that no longer parses."""
    try:
        return graph_view(ws.engine.spec_of(execution.spec, execution.workflow_name))
    except (SpecError, LookupError):
        return None


@router.get("/executions/{id}", summary="Show an execution", responses=E404)
async def get_execution(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    """Mistral's fields, and `graph`: the workflow's tasks and the transitions between
    them (`{type, tasks: [{name, action, workflow}], transitions: [{source, target, on,
    guard}]}`), which the dashboard draws."""
    ws = workflows_of(request)
    execution = await visible_execution(ws, identity, id)
    return execution_view(execution) | {"graph": _graph(ws, execution)}


def _yes(value: str, field: str) -> bool:
    """A flag as mistralclient sends it: empty when unset, else `True`."""
    found = value.strip().lower()
    if found not in ("", "true", "false", "1", "0", "yes", "no"):
        raise RequestError(400, f"{value!r} is neither true nor false", field)
    return found in ("true", "1", "yes")


async def _with_subs(
    ws: Workflows, project_id: str | None, top: Execution, max_depth: int, errors_only: bool
) -> list[Execution]:
    """`top`, then each execution its tasks started followed by those below it, down to
    `max_depth` levels (-1: all); with `errors_only`, through failed tasks only. A tree
    larger than one answer is refused rather than cut short unsaid."""
    found: list[Execution] = []
    seen: set[str] = set()
    too_many = RequestError(
        400, f"more than {MAX_LIMIT} executions or tasks: ask for fewer levels", "max_depth"
    )

    async def walk(execution: Execution, depth: int) -> None:
        # A (corrupt) cycle of sub-executions must not loop forever.
        if execution.id in seen:
            return
        seen.add(execution.id)
        found.append(execution)
        if len(found) > MAX_LIMIT:
            raise too_many
        if 0 <= max_depth <= depth:
            return
        tasks = await ws.store.tasks(project_id, MAX_LIMIT, execution_id=execution.id)
        if len(tasks) == MAX_LIMIT:
            raise too_many
        for task in tasks:
            if task.type != "WORKFLOW" or (errors_only and task.state != "ERROR"):
                continue
            subs = await ws.store.executions(project_id, MAX_LIMIT, task_execution_id=task.id)
            for sub in subs:
                await walk(sub, depth + 1)

    await walk(top, 0)
    return found


@router.get(
    "/executions/{id}/executions",
    summary="List an execution and the sub-executions below it",
    responses=E404,
)
async def list_sub_executions(
    request: Request,
    id: Id,
    identity: Caller,
    max_depth: Annotated[
        int, Query(ge=-1, le=1000, description="levels below the execution (-1: all)")
    ] = -1,
    errors_only: Annotated[
        str, Query(max_length=5, description="true: only below tasks that failed")
    ] = "",
) -> dict[str, Any]:
    """The execution first, then depth first, each sub-execution followed by its own."""
    failed_only = _yes(errors_only, "errors_only")
    ws = workflows_of(request)
    top = await visible_execution(ws, identity, id)
    found = await _with_subs(ws, project_of(identity), top, max_depth, failed_only)
    return {"executions": [execution_view(e) for e in found]}


@router.put(
    "/executions/{id}",
    summary="Pause, resume, cancel, fail or succeed an execution; change its description",
    responses={**E404, **E409},
)
async def update_execution(
    request: Request, id: Id, body: ExecutionChange, identity: Caller
) -> dict[str, Any]:
    ws = workflows_of(request)
    execution = await visible_execution(ws, identity, id)
    if body.id is not None and body.id != id:
        raise RequestError(400, "not the id of the path", "id")
    if body.params is not None:
        raise RequestError(400, "an execution's params (env) are fixed when it starts", "params")
    if body.state is None and body.description is None:
        raise RequestError(400, "give a state or a description", "state")
    if body.state is not None:
        if execution.state in FINISHED:
            raise RequestError(409, f"the execution is {execution.state} already", "state")
        try:
            await ws.set_state(id, body.state, body.state_info)
        except NotHere as exc:
            raise RequestError(409, str(exc), "state") from None
        except LookupError:
            raise RequestError(404, f"no execution {id}", "id") from None
        except ValueError as exc:
            raise RequestError(409, str(exc), "state") from None
    if body.description is not None:
        try:
            await ws.describe(id, body.description)
        except NotHere as exc:
            raise RequestError(409, str(exc), "id") from None
        except LookupError:
            raise RequestError(404, f"no execution {id}", "id") from None
    return execution_view(await visible_execution(ws, identity, id))


@deleting(
    router,
    "/executions/{id}",
    "Delete an execution that is over, with its tasks and sub-executions",
)
async def delete_execution(
    request: Request,
    id: Id,
    identity: Caller,
    force: Annotated[bool, Query(description="cancel it first if it is not over")] = False,
) -> Response:
    ws = workflows_of(request)
    execution = await visible_execution(ws, identity, id)
    if execution.state not in FINISHED:
        if not force:
            raise RequestError(
                409,
                f"the execution is {execution.state}: cancel it first, or delete with force=true",
                "id",
            )
        try:
            await ws.set_state(id, "CANCELLED", "cancelled to be deleted")
        except NotHere as exc:
            raise RequestError(409, str(exc), "id") from None
        except ValueError:
            pass  # it ended meanwhile
    await ws.store.delete_execution(id)
    return Response(status_code=204)
