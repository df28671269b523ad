"""One error shape for every 4xx/5xx the API returns.

{"error": {"status": 400, "message": "event_rule.query[0].op: ...",
           "errors": [{"field": "event_rule.query[0].op", "problem": "..."}]}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from opendoctor.core.errors import RequestError
from opendoctor.store.db import DatabaseUnavailable, refused_text, unavailable

log = logging.getLogger(__name__)

DATABASE_DOWN = "the database is not answering; try again shortly"
NUL_TEXT = "text must not contain the NUL character (\\u0000)"


def error_body(
    status: int, errors: list[dict[str, str]], message: str | None = None
) -> dict[str, Any]:
    if message is None:
        message = "; ".join(
            f"{e['field']}: {e['problem']}" if e.get("field") else e["problem"] for e in errors
        )
    return {"error": {"status": status, "message": message, "errors": errors}}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'event_rule', 'query', 0, 'op') -> 'event_rule.query[0].op'."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and out == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_errors(errors: list[Any]) -> list[dict[str, str]]:
    out = []
    for err in errors:
        problem = str(err.get("msg", "invalid"))
        problem = problem.removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            out.append(
                {
                    "field": "body",
                    "problem": "malformed JSON: " + str(err.get("ctx", {}).get("error", problem)),
                }
            )
            continue
        # A check over several fields names its culprit in ctx["field"].
        named = (err.get("ctx") or {}).get("field")
        field = str(named) if named else field_path(tuple(err.get("loc", ())))
        out.append({"field": field, "problem": problem})
    return out


AODH_PREFIX = "/v2/"


def answer(
    request: Request, body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error body; on the Aodh API, with Aodh's `error_message` beside it as well:
    aodhclient shows its `faultstring` and nothing else ("Bad request (HTTP 400)")."""
    if request.url.path.startswith(AODH_PREFIX):
        fault = "Client" if status < 500 else "Server"
        message = body["error"]["message"]
        body["error_message"] = {"faultstring": message, "faultcode": fault, "debuginfo": None}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _api_error(request: Request, exc: RequestError) -> JSONResponse:
        errors = [{"field": exc.field or "", "problem": exc.message}]
        return answer(request, error_body(exc.status, errors), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(request, error_body(400, validation_errors(list(exc.errors()))), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = [{"field": "", "problem": str(exc.detail)}]
        return answer(request, error_body(exc.status_code, errors), exc.status_code)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # A database that is down or restarting is not a bug: say so, and that a retry
        # will do (the pool reconnects by itself). Any other database error is one, and
        # goes on to the server's 500 with its traceback in the log.
        if refused_text(exc):
            # Input PostgreSQL cannot store, that no check before the write caught.
            return answer(request, error_body(400, [{"field": "body", "problem": NUL_TEXT}]), 400)
        if not unavailable(exc):
            raise exc
        log.warning(
            "database not answering",
            extra={"path": request.url.path, "error": f"{type(exc).__name__}: {exc}"},
        )
        body = error_body(503, [{"field": "", "problem": DATABASE_DOWN}])
        return answer(request, body, 503, {"Retry-After": "1"})

    for kind in (DatabaseUnavailable, PoolTimeout, DBAPIError):
        app.add_exception_handler(kind, _database)
