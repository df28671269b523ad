"""What every route of the Mistral-compatible API shares: errors as Mistral's clients
read them, the caller, the workflow service, and the lookups that keep to the caller's
project."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from opendoctor.api.auth import current_identity
from opendoctor.api.errors import answer, error_body, validation_errors
from opendoctor.api.mistral_schema import E503
from opendoctor.api.native import service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.workflows import Execution
from opendoctor.workflow.service import Workflows

TAGS: list[Any] = ["workflows (Mistral)"]


class Refused(RequestError):
    """A RequestError with headers (a 429's Retry-After)."""

    def __init__(self, status: int, message: str, field: str, headers: dict[str, str]) -> None:
        super().__init__(status, message, field)
        self.headers = headers


class MistralRoute(APIRoute):
    """Errors as the project answers them, with `faultstring` at the top as well: it is
    what python-mistralclient shows of an error (and nothing else)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestError as exc:
                status, headers = exc.status, getattr(exc, "headers", None)
                body = error_body(status, [{"field": exc.field or "", "problem": exc.message}])
            except RequestValidationError as exc:
                status, headers = 400, None
                body = error_body(400, validation_errors(list(exc.errors())))
            body["faultstring"] = body["error"]["message"]
            return answer(request, body, status, headers)

        return route


def new_router() -> APIRouter:
    return APIRouter(tags=TAGS, route_class=MistralRoute, responses=E503)


Caller = Annotated[Identity, Depends(current_identity)]


def workflows_of(request: Request) -> Workflows:
    found: Workflows | None = service_of(request).workflows
    if found is None:
        raise RequestError(503, "this process runs no workflow engine (api or inspector role)")
    return found


def project_of(identity: Identity) -> str | None:
    """Whose things a caller sees: None (everything) for the admin role."""
    return None if identity.is_admin else identity.project_id


async def visible_execution(ws: Workflows, identity: Identity, execution_id: str) -> Execution:
    found = await ws.store.execution(execution_id)
    if found is None or not identity.can_see(found.project_id):
        raise RequestError(404, f"no execution {execution_id}", "id")
    return found


async def namespaces_of(ws: Workflows, execution_ids: set[str]) -> dict[str, str]:
    """The namespace of each execution's workflow (tasks show it, and do not keep it)."""
    found = {}
    for execution_id in execution_ids:
        e = await ws.store.execution(execution_id)
        found[execution_id] = e.workflow_namespace if e is not None else ""
    return found
