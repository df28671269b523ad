"""Mistral-compatible workflow API, so that python-mistralclient and the `mistral` command
work unchanged (docs/workflows.md): `/v2/workflows` here, executions in
`api.mistral_executions`, tasks, action executions and actions in `api.mistral_tasks`.

Who sees what: a project its own workflows and executions, and the public and built-in
workflows to read and start; the admin role everything. Another project's execution,
task or action execution answers 404, as one that does not exist. The shapes are in
`api.mistral_schema`; the work is `workflow.service.Workflows`'.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from opendoctor.api import mistral_executions, mistral_tasks
from opendoctor.api.audit import audit_target
from opendoctor.api.mistral_routing import (
    Caller,
    deleting,
    new_router,
    project_of,
    read_page,
    workflows_of,
)
from opendoctor.api.mistral_schema import (
    E404,
    E409,
    E413,
    MAX_NAME,
    MAX_TEXT,
    NameFilter,
    Namespace,
    Page,
    Scope,
    WorkflowIdent,
    filter_value,
    listed,
    workflow_view,
)
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.workflows import WorkflowDefinition
from opendoctor.store.workflows import DefinitionExists
from opendoctor.workflow.service import Workflows
from opendoctor.workflow.spec import SpecError

workflows = new_router()


async def _definition_text(request: Request) -> str:
    raw = await request.body()
    if len(raw) > MAX_TEXT:
        raise RequestError(413, f"the definition is larger than {MAX_TEXT} bytes", "body")
    if not raw.strip():
        raise RequestError(400, "the body is empty: send the workflow definition (YAML)", "body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not UTF-8 text: {exc}", "body") from None
    if "\x00" in text:
        raise RequestError(400, "the definition holds a NUL character", "body")
    return text


def _definitions(
    ws: Workflows, text: str, project_id: str, scope: str, namespace: str
) -> list[WorkflowDefinition]:
    try:
        defs = ws.definitions_of(text, project_id, scope, namespace)
    except SpecError as exc:
        raise RequestError(400, str(exc), "definition") from None
    for d in defs:
        if len(d.name) > MAX_NAME:
            raise RequestError(400, f"a workflow name is longer than {MAX_NAME}", "definition")
    if not defs:
        raise RequestError(400, "the definition holds no workflow", "definition")
    return defs


async def _sent(
    request: Request, identity: Identity, scope: str, namespace: str
) -> tuple[Workflows, list[WorkflowDefinition]]:
    """The workflows of the definition sent, as the caller's own."""
    ws = workflows_of(request)
    text = await _definition_text(request)
    return ws, _definitions(ws, text, identity.project_id, scope, namespace)


# The definition travels as its YAML text (mistralclient sends text/plain).
_TEXT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/plain": {"schema": {"type": "string", "maxLength": MAX_TEXT}}},
    }
}


# --- workflows ------------------------------------------------------------------------------


@workflows.post(
    "/workflows/validate",
    summary="Check a workflow definition without storing it",
    openapi_extra=_TEXT_BODY,
    responses=E413,
)
async def validate_workflow(request: Request, identity: Caller) -> dict[str, Any]:
    """`{"valid": true}`, or `{"valid": false, "error": "line N: path: problem"}`."""
    text = await _definition_text(request)
    try:
        workflows_of(request).validate(text)
    except SpecError as exc:
        return {"valid": False, "error": str(exc)}
    return {"valid": True}


@workflows.post(
    "/workflows",
    status_code=201,
    summary="Add the workflows of a definition",
    openapi_extra=_TEXT_BODY,
    responses={**E409, **E413},
)
async def create_workflows(
    request: Request, identity: Caller, scope: Scope = "private", namespace: Namespace = ""
) -> dict[str, Any]:
    """Each workflow of the file becomes one, with the whole text as its definition;
    all or none (a name taken in the namespace is a 409)."""
    ws, defs = await _sent(request, identity, scope, namespace)
    try:
        await ws.store.add_definitions(defs)
    except DefinitionExists as exc:
        raise RequestError(409, str(exc), "definition") from None
    audit_target(request, ",".join(d.id for d in defs))
    return {"workflows": [workflow_view(d) for d in defs]}


@workflows.put(
    "/workflows",
    summary="Replace the definitions of workflows, found by name",
    openapi_extra=_TEXT_BODY,
    responses={**E404, **E413},
)
async def update_workflows(
    request: Request, identity: Caller, scope: Scope = "private", namespace: Namespace = ""
) -> dict[str, Any]:
    ws, defs = await _sent(request, identity, scope, namespace)
    try:
        stored = await ws.store.replace_definitions(defs)
    except LookupError as exc:
        raise RequestError(404, str(exc.args[0]), "definition") from None
    return {"workflows": [workflow_view(d) for d in stored]}


async def _visible_definition(
    ws: Workflows, identity: Identity, ident: str, namespace: str
) -> WorkflowDefinition:
    found = await ws.store.definition(ident, project_of(identity), namespace)
    # By name, only in the namespace asked for (the store also looks in the default one,
    # as a sub-workflow is found).
    if found is None or (found.id != ident and found.namespace != namespace):
        raise RequestError(404, f"no workflow {ident!r}", "identifier")
    return found


def _own(identity: Identity, d: WorkflowDefinition) -> None:
    """Only its project (or the admin role) changes a workflow; the shipped ones are
    replaced by adding one of the same name, never changed."""
    if d.builtin:
        raise RequestError(
            409,
            f"{d.name!r} is a built-in workflow: add one of the same name to replace it",
            "identifier",
        )
    if not identity.is_admin and d.project_id != identity.project_id:
        raise RequestError(403, f"{d.name!r} is another project's public workflow", "identifier")


@workflows.put(
    "/workflows/{identifier}",
    summary="Replace the definition of one workflow",
    openapi_extra=_TEXT_BODY,
    responses={**E404, **E409, **E413},
)
async def update_workflow(
    request: Request,
    identifier: WorkflowIdent,
    identity: Caller,
    scope: Scope = "private",
    namespace: Namespace = "",
) -> dict[str, Any]:
    """The text must hold that one workflow, under the same name."""
    ws = workflows_of(request)
    text = await _definition_text(request)
    found = await _visible_definition(ws, identity, identifier, namespace)
    _own(identity, found)
    defs = _definitions(ws, text, found.project_id, scope, found.namespace)
    if [d.name for d in defs] != [found.name]:
        names = ", ".join(d.name for d in defs)
        raise RequestError(
            400, f"the text must hold one workflow named {found.name!r}, not: {names}", "definition"
        )
    try:
        stored = await ws.store.replace_definitions(defs)
    except LookupError as exc:
        raise RequestError(404, str(exc.args[0]), "identifier") from None
    return workflow_view(stored[0])


@workflows.get("/workflows", summary="List workflows", responses=E404)
async def list_workflows(
    request: Request,
    identity: Caller,
    page: Page,
    name: NameFilter = None,
    namespace: Annotated[str | None, Query(max_length=MAX_NAME + 3)] = None,
) -> dict[str, Any]:
    """Oldest first: the project's own, the public ones and the built-in ones (one that
    a workflow of the same name replaces for the project is left out)."""
    if page.descending:
        raise RequestError(400, "workflows are listed oldest first only", "sort_dirs")
    reading = workflows_of(request).store.definitions(
        project_of(identity),
        page.limit,
        page.marker,
        name=filter_value(name, "name"),
        namespace=filter_value(namespace, "namespace"),
    )
    defs, last = await read_page(page, reading)
    return listed(request, "workflows", [workflow_view(d) for d in defs], page, last)


@workflows.get("/workflows/{identifier}", summary="Show a workflow (by id or name)", responses=E404)
async def get_workflow(
    request: Request,
    identifier: WorkflowIdent,
    identity: Caller,
    namespace: Namespace = "",
) -> dict[str, Any]:
    found = await _visible_definition(workflows_of(request), identity, identifier, namespace)
    return workflow_view(found)


@deleting(workflows, "/workflows/{identifier}", "Delete a workflow (its executions stay)")
async def delete_workflow(
    request: Request,
    identifier: WorkflowIdent,
    identity: Caller,
    namespace: Namespace = "",
) -> Response:
    ws = workflows_of(request)
    found = await _visible_definition(ws, identity, identifier, namespace)
    _own(identity, found)
    if not await ws.store.delete_definition(found.id):
        raise RequestError(404, f"no workflow {identifier!r}", "identifier")
    return Response(status_code=204)


router = APIRouter(prefix="/v2")
router.include_router(workflows)
router.include_router(mistral_executions.router)
router.include_router(mistral_tasks.router)
