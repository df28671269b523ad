"""What every route of the Mistral-compatible API shares: errors as Mistral's clients
read them, the caller, the workflow service, and the lookups that keep to the caller's
project."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from opendoctor.api.auth import current_identity
from opendoctor.api.errors import answer, error_body, validation_errors
from opendoctor.api.mistral_schema import E404, E409, E503, Paging
from opendoctor.api.native import known_marker, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.workflows import Execution, TaskExecution
from opendoctor.workflow.service import Workflows

TAGS: list[Any] = ["workflows (Mistral)"]
Route = TypeVar("Route", bound=Callable[..., Any])


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


def deleting(router: APIRouter, path: str, summary: str) -> Callable[[Route], Route]:
    """A DELETE route: 204 and no body when done; 404 if there is no such thing, 409
    if it may not go (yet)."""
    return router.delete(
        path,
        status_code=204,
        response_class=Response,
        summary=summary,
        responses={**E404, **E409},
    )


Caller = Annotated[Identity, Depends(current_identity)]


def workflows_of(request: Request) -> Workflows:
    found: Workflows | None = service_of(request).workflows
    if found is None:
        raise RequestError(503, "this process runs no workflow engine (api or inspector role)")
    return found


def project_of(identity: Identity) -> str | None:
    """Whose things a caller sees: None (everything) for the admin role."""
    return None if identity.is_admin else identity.project_id


class _Owned(Protocol):
    @property
    def project_id(self) -> str: ...


class _Listed(Protocol):
    @property
    def id(self) -> str: ...


class _OfExecution(Protocol):
    @property
    def execution_id(self) -> str | None: ...


OwnedT = TypeVar("OwnedT", bound=_Owned)
ListedT = TypeVar("ListedT", bound=_Listed)
InRunT = TypeVar("InRunT", bound=_OfExecution)


def visible(identity: Identity, found: OwnedT | None, what: str, ident: str) -> OwnedT:
    """`found` if the caller may see it; another project's answers as one that does not
    exist, so that its ids tell nothing."""
    if found is None or not identity.can_see(found.project_id):
        raise RequestError(404, f"no {what} {ident}", "id")
    return found


async def visible_execution(ws: Workflows, identity: Identity, execution_id: str) -> Execution:
    return visible(identity, await ws.store.execution(execution_id), "execution", execution_id)


async def visible_task(ws: Workflows, identity: Identity, task_id: str) -> TaskExecution:
    return visible(identity, await ws.store.task(task_id), "task execution", task_id)


async def read_page(
    page: Paging, reading: Awaitable[list[ListedT]]
) -> tuple[list[ListedT], str | None]:
    """A page read from the store, and the id to read the next one after when it is full
    (a shorter page is the last)."""
    with known_marker():
        items = await reading
    return items, items[-1].id if len(items) == page.limit else None


async def with_namespaces(
    ws: Workflows, records: Sequence[InRunT], view: Callable[[InRunT, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Views of task or action executions: they show their workflow's namespace, which
    only their execution keeps, read here once for the lot."""
    executions = await ws.store.executions_by_ids(
        {r.execution_id for r in records if r.execution_id is not None}
    )
    return [
        view(r, e.workflow_namespace if (e := executions.get(r.execution_id or "")) else "")
        for r in records
    ]
