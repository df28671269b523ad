"""`/v1/templates`: the rule templates in force; check, add, replace and delete them (admin).

A template travels as its YAML text: the body of a POST is the YAML itself
(`application/yaml`, `text/yaml` or `text/plain`) or `{"text": "<the YAML>"}` as JSON.
An invalid template answers 422 with one error entry per problem, each naming its line;
the templates in force are left exactly as they were.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.auth import current_identity
from opendoctor.api.errors import error_body
from opendoctor.api.native import inspecting, require_admin, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.inspector.templates import Plan, TemplateError
from opendoctor.inspector.templates.registry import Installed

router = APIRouter(prefix="/v1/templates", tags=["templates"])

_JSON_TYPES = ("application/json",)


async def _template_text(request: Request) -> str:
    """The template's YAML from the body, in any accepted form, or a 400 saying why not."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):
        raise RequestError(
            415,
            f"{ctype} is not accepted: send the YAML itself (application/yaml or text/plain) "
            'or JSON {"text": "<the YAML>"}',
            "content-type",
        )
    if not raw.strip():
        raise RequestError(400, "the body is empty: send the template's YAML", "body")
    if ctype in _JSON_TYPES or ctype.endswith("+json"):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, f"malformed JSON: {exc}", "body") from exc
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise RequestError(400, 'a JSON body is {"text": "<the template YAML>"}', "text")
        if not text.strip():
            raise RequestError(400, "the template text is empty", "text")
        return text
    # Anything else is the YAML itself (curl --data-binary sends it as a form, say).
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not UTF-8 text: {exc}", "body") from exc


def _invalid(exc: TemplateError) -> JSONResponse:
    problems = exc.problems or [str(exc)]
    errors = [{"field": "template", "problem": p} for p in problems]
    message = "invalid template: " + "; ".join(problems)
    return JSONResponse(error_body(422, errors, message), status_code=422)


def _entry(item: Installed, matches: int) -> dict[str, Any]:
    template = item.template
    return {
        "name": template.name,
        "description": template.description.strip(),
        "origin": item.origin,
        "source": item.source,
        "scenarios": len(template.scenarios),
        "matches": matches,
    }


def _effects(plan: Plan) -> dict[str, int]:
    return {
        "notifications": len(plan.notify),
        "mark_downs": len(plan.mark_down),
        "workflows": len(plan.workflows),
    }


EXAMPLE_TEMPLATE = """name: host_watch
description: Flag hosts the monitor reports down.
entities:
  alarm: {category: ALARM, name: compute.host.down}
  host: {type: host}
scenarios:
  - condition: alarm [on] host
    actions:
      - raise_alarm: {target: host, name: host.watched, severity: WARNING, causing_alarm: alarm}
"""
# The body is read by hand (YAML or JSON), so its forms are declared here.
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}, "example": EXAMPLE_TEMPLATE},
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"type": "string", "description": "the YAML"}},
                }
            },
        },
    }
}
_INVALID = {
    "description": "invalid template: one entry of `error.errors` per problem, "
    "field `template`, the problem naming its line"
}


@router.get("", summary="The rule templates in force (admin)")
async def list_templates(
    request: Request, identity: Identity = Depends(current_identity)
) -> list[dict[str, Any]]:
    """Each template with where it came from (`built-in`, `file` or `api`), its number
    of scenarios and how many matches it holds in the graph now."""
    require_admin(identity)
    service = inspecting(request, "the rule templates")
    counts = service.template_matches()
    installed = service.templates()
    return [_entry(installed[name], counts.get(name, 0)) for name in sorted(installed)]


@router.get("/{name}", summary="One rule template, with its YAML (admin)")
async def get_template(
    name: str, request: Request, identity: Identity = Depends(current_identity)
) -> dict[str, Any]:
    require_admin(identity)
    service = inspecting(request, "the rule templates")
    item = service.templates().get(name)
    if item is None:
        raise RequestError(404, f"no template {name!r}", "name")
    return dict(_entry(item, service.template_matches().get(name, 0)), text=item.template.text)


@router.post(
    "/validate",
    summary="Check a rule template without adding it (admin)",
    openapi_extra=_BODY,
    responses={422: _INVALID},
)
async def validate_template(
    request: Request, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    """Compiles the template as `POST /v1/templates` would (cause cycles are checked
    against the templates in force) and answers `{"valid": true, "name": ...}`, or 422
    listing every problem. Nothing changes."""
    require_admin(identity)
    text = await _template_text(request)
    try:
        template = await service_of(request).validate_template(text)
    except TemplateError as exc:
        return _invalid(exc)
    return JSONResponse({"valid": True, "name": template.name})


@router.post(
    "",
    summary="Add or replace a rule template (admin)",
    openapi_extra=_BODY,
    status_code=201,
    responses={200: {"description": "replaced a template of the same name"}, 422: _INVALID},
)
async def put_template(
    request: Request, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    """Checks the template, stores it (it outlives restarts) and puts it in force at
    once: 201 when the name is new, 200 when it replaces a template of that name (a
    built-in or file template it replaces comes back when it is deleted). It is
    evaluated over the current graph straight away; `effects` counts what that set off
    on faults already active (owners notified, resources marked down, workflows
    requested). An invalid template answers 422 and changes nothing."""
    require_admin(identity)
    text = await _template_text(request)
    service = inspecting(request, "the rule templates")
    try:
        item, created, plan = await service.put_template(text)
    except TemplateError as exc:
        return _invalid(exc)
    name = item.template.name
    audit_target(request, name)
    body = dict(
        _entry(item, service.template_matches().get(name, 0)),
        created=created,
        effects=_effects(plan),
    )
    status = 201 if created else 200
    headers = {"Location": f"/v1/templates/{name}"} if created else None
    return JSONResponse(body, status_code=status, headers=headers)


@router.delete(
    "/{name}",
    summary="Delete a rule template added through the API (admin)",
    status_code=204,
    responses={
        404: {"description": "no template of that name"},
        409: {"description": "a built-in or file template: it cannot be deleted here"},
    },
)
async def delete_template(
    name: str, request: Request, identity: Identity = Depends(current_identity)
) -> Response:
    """Takes the template out of force and out of the store; what it deduced goes with
    it. A built-in or file template it replaced comes back. Built-in and file templates
    themselves answer 409, saying how to switch them off."""
    require_admin(identity)
    service = inspecting(request, "the rule templates")
    try:
        deleted = await service.delete_template(name)
    except PermissionError as exc:
        raise RequestError(409, str(exc), "name") from exc
    if deleted is None:
        raise RequestError(404, f"no template {name!r}", "name")
    return Response(status_code=204)
