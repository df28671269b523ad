"""The OpenAPI document as clients need it: every error status an operation answers,
each with the one error body every error has (`api.errors.error_body`).

FastAPI declares only what a route names, plus a 422 of its own shape that we never
send (our validation errors are 400s). A client generated from the document, or a
schema fuzzer, would meet answers the document does not admit: so the statuses that
come from outside the routes (the body bounds, identity, the database) are declared on
every operation, and every error response points at the same schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

ERROR_REF = "#/components/schemas/ErrorBody"


class ErrorItem(BaseModel):
    field: str
    problem: str


class ErrorDetail(BaseModel):
    status: int
    message: str
    errors: list[ErrorItem]


class AodhFault(BaseModel):
    faultstring: str
    faultcode: str
    debuginfo: None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    error_message: AodhFault | None = Field(
        None, description="on /v2 (Aodh's API): the message as Aodh's clients read it"
    )


# Answered by anything around the routes, whatever the route.
_EVERYWHERE = {
    "400": "malformed or invalid input (JSON nested too deep, a bad field or header)",
    "401": "no identity, or one that is not believed",
    "413": "a body over api.max_body_bytes",
    "503": "the database is not answering, or this process does not keep what is asked",
}
_ROUTED = {
    "403": "a route that needs the admin role, or a quota reached",
    "404": "no such resource (another project's answers the same)",
}
_EVENTS = {
    "422": "an event about a host, server or resource opendoctor does not know",
    "429": "the monitor is over its rate (api.events_rate): send again after Retry-After",
}
_OPEN = ("/health", "/metrics")  # no identity, no body, nothing stored


def declare_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error statuses and the error body to every operation of `schema`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorBody"] = body
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, operations in schema.get("paths", {}).items():
        if path in _OPEN:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            wanted = dict(_EVERYWHERE)
            if path in ("/events", "/v1/event"):
                wanted.update(_EVENTS)
            elif path.startswith(("/v1/", "/v2/")):
                wanted.update(_ROUTED)
            for status, description in wanted.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    return schema


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its $defs put in place (the document has no room for
    them under a route)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself (to bound and refuse
    it field by field): the body's schema, declared as FastAPI would."""
    content = {"application/json": {"schema": inline_defs(schema)}}
    return {"requestBody": {"required": True, "content": content}}
