"""`/v2/executions` of the Mistral-compatible API: start a workflow, list and show its
runs, pause, resume, cancel, fail or succeed one, delete one that is over."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Query, Request, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.mistral_routing import (
    Caller,
    Refused,
    new_router,
    project_of,
    visible_execution,
    workflows_of,
)
from opendoctor.api.mistral_schema import (
    E404,
    E409,
    E429,
    ExecutionChange,
    ExecutionIn,
    Fields,
    Id,
    IdFilter,
    Limit,
    Marker,
    NameFilter,
    SortDirs,
    SortKeys,
    StateFilter,
    execution_view,
    filter_value,
    json_object,
    listed,
    paging,
    state_filter,
)
from opendoctor.api.native import known_marker, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.workflows import EXECUTION_STATES, FINISHED
from opendoctor.store.workflows import RunWrites
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
    limit: Limit = None,
    marker: Marker = None,
    sort_keys: SortKeys = "",
    sort_dirs: SortDirs = "",
    fields: Fields = "",
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
    page = paging(limit, marker, sort_keys, sort_dirs, fields)
    empty = {n.strip() for n in nulls.split(",") if n.strip()}
    if not empty <= {"root_execution_id", "task_execution_id"}:
        raise RequestError(400, "only root_execution_id and task_execution_id", "nulls")
    ws = workflows_of(request)
    with known_marker():
        found = await ws.store.executions(
            project_of(identity),
            page.limit,
            page.marker,
            state=state_filter(state, "state", EXECUTION_STATES),
            workflow_name=filter_value(workflow_name, "workflow_name"),
            task_execution_id=filter_value(task_execution_id, "task_execution_id"),
            root_execution_id=filter_value(root_execution_id, "root_execution_id"),
            descending=page.descending,
        )
    last = found[-1].id if len(found) == page.limit else None
    # Top-level executions (`--rootsonly`) are picked from the page; `next` still
    # follows the page as read.
    kept = [e for e in found if not any(getattr(e, n) for n in empty)]
    return listed(request, "executions", [execution_view(e) for e in kept], page, last)


@router.get("/executions/{id}", summary="Show an execution", responses=E404)
async def get_execution(request: Request, id: Id, identity: Caller) -> dict[str, Any]:
    return execution_view(await visible_execution(workflows_of(request), identity, id))


async def _describe(ws: Workflows, execution_id: str, description: str) -> None:
    """A new description: on the record the engine runs, if it runs it (it writes whole
    records), else on the stored one of an execution that is over."""
    run = ws.engine.runs.get(execution_id)
    if run is not None:
        run.execution.description = description
        await ws.engine.commit.write([run.execution])
        return
    stored = await ws.store.execution(execution_id)
    if stored is None:
        raise RequestError(404, f"no execution {execution_id}", "id")
    if stored.state not in FINISHED:
        raise RequestError(
            409, "the execution is run by another engine: change its description there", "id"
        )
    await ws.store.write(RunWrites(executions=[replace(stored, description=description)]))


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
        await _describe(ws, id, body.description)
    return execution_view(await visible_execution(ws, identity, id))


@router.delete(
    "/executions/{id}",
    status_code=204,
    response_class=Response,
    summary="Delete an execution that is over, with its tasks and sub-executions",
    responses={**E404, **E409},
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
