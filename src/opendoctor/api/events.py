"""Southbound: Doctor-format fault events from monitors.

Accepted shapes (DESIGN.md §5): a JSON list of events, one bare event, `{"event": {...}}`
or `{"events": [...]}`; at `PUT /events`, `POST /events` and Vitrage's `POST /v1/event`.
A request is all or nothing: one bad event rejects it whole and nothing of it is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opendoctor.api.auth import monitor_of
from opendoctor.api.bounds import MAX_DEPTH, too_deep
from opendoctor.api.errors import NUL_TEXT, error_body, validation_errors
from opendoctor.api.facade import Facade
from opendoctor.api.ratelimit import refused
from opendoctor.core.errors import RequestError
from opendoctor.core.model import HOST_EVENTS, INSTANCE_EVENTS, RESOURCE_DOWN, Event, new_ids

router = APIRouter(tags=["events (Doctor)"])

# (method, path) of the routes below: the front loop serves them itself (app/front.py).
INTAKE_ROUTES = frozenset({("PUT", "/events"), ("POST", "/events"), ("POST", "/v1/event")})

# Who reports: the monitor whose token came with the request (DESIGN.md §6).
Monitor = Annotated[str, Depends(monitor_of)]

KNOWN_TYPES = HOST_EVENTS | INSTANCE_EVENTS | {RESOURCE_DOWN}


class EventDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    hostname: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^:]+$")
    status: str = Field(min_length=1, max_length=64)
    monitor: str = ""
    monitor_event_id: str = ""
    instance_id: str | None = Field(None, min_length=1, max_length=255)
    # resource.down: any vertex of the entity graph (a switch, a port, a power feed).
    resource_type: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    resource_id: str | None = Field(None, min_length=1, max_length=190)


# Validation context: the JSON text these values were parsed from holds no escaped U+0000
# (`\u0000`, the only way JSON can carry it), so no string can: one search of the body
# instead of a walk of every value of every event.
NUL_FREE = "nul_free"


def _nul_at(value: Any, path: str) -> str | None:
    """Where in a parsed JSON value a string holds U+0000 (None: nowhere)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
        if any("\x00" in str(k) for k in value):
            return path
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for where, item in items:
        found = _nul_at(item, where)
        if found is not None:
            return found
    return None


class DoctorEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    time: datetime | float | None = None
    type: str = Field(min_length=1, max_length=255)
    details: EventDetails

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any, info: ValidationInfo) -> Any:
        # PostgreSQL cannot store U+0000 in text. Refuse it here: handling starts before
        # the write, so a write that fails on it would come too late.
        if info.context is not None and info.context.get(NUL_FREE):
            return data
        where = _nul_at(data, "")
        if where is not None:
            raise PydanticCustomError("value_error", NUL_TEXT, {"field": where or "body"})
        return data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in KNOWN_TYPES:
            known = ", ".join(sorted(KNOWN_TYPES))
            raise ValueError(f"unknown event type {value!r}; known types: {known}")
        return value

    @model_validator(mode="after")
    def _subject_named(self) -> DoctorEvent:
        d = self.details
        if self.type in INSTANCE_EVENTS and d.instance_id is None:
            raise PydanticCustomError(
                "missing",
                "details.instance_id is required for {type} events",
                {"type": self.type, "field": "details.instance_id"},
            )
        if self.type == RESOURCE_DOWN:
            if d.resource_type is None or d.resource_id is None:
                raise PydanticCustomError(
                    "missing",
                    "details.resource_type and details.resource_id are required "
                    "for resource.down events",
                    {"field": "details.resource_id"},
                )
            if d.resource_type in ("host", "server"):
                raise PydanticCustomError(
                    "value_error",
                    "a host or server fault has its own event types "
                    "(compute.host.down, compute.instance.*); resource.down is for the rest",
                    {"field": "details.resource_type"},
                )
        elif d.hostname is None:
            raise PydanticCustomError(
                "missing",
                "details.hostname is required for {type} events",
                {"type": self.type, "field": "details.hostname"},
            )
        return self

    @property
    def subject(self) -> str:
        """The host's name, or the graph key of the resource a resource.down is about."""
        d = self.details
        if self.type == RESOURCE_DOWN:
            return f"{d.resource_type}:{d.resource_id}"
        assert d.hostname is not None
        return d.hostname

    def to_event(self, reporter: str, event_id: str) -> Event:
        now = time.time()
        if isinstance(self.time, datetime):
            # Doctor monitors send naive ISO times in UTC.
            stamp = self.time if self.time.tzinfo else self.time.replace(tzinfo=UTC)
            at = stamp.timestamp()
        elif isinstance(self.time, float):
            at = self.time
        else:
            at = now
        extra = dict(self.details.model_extra or {})
        for name in ("resource_type", "resource_id"):
            if getattr(self.details, name) is not None:
                extra[name] = getattr(self.details, name)
        return Event(
            type=self.type,
            hostname=self.subject,
            status=self.details.status.lower(),
            time=at,
            monitor=self.details.monitor,
            monitor_event_id=self.details.monitor_event_id,
            reporter=reporter,
            details=extra,
            instance_id=self.details.instance_id if self.type in INSTANCE_EVENTS else None,
            id=event_id,
            received=now,
            trace={"T01": min(at, now)},
        )


_EVENTS = TypeAdapter(list[DoctorEvent])


def unwrap(body: Any) -> tuple[list[Any], str]:
    """The events in any accepted shape, and the prefix that names their field paths."""
    if isinstance(body, list):
        return body, ""
    if isinstance(body, dict):
        if "events" in body and isinstance(body["events"], list):
            return body["events"], "events"
        if "event" in body and isinstance(body["event"], dict):
            return [body["event"]], "event"
        return [body], ""
    raise RequestError(400, "expected an event object or a list of events", "body")


def parse(raw: bytes, max_events: int | None = None) -> list[DoctorEvent]:
    """The events of a request (or a queue's message): a `RequestError` for the body as
    a whole, `InvalidEvents` naming every field refused; more than `max_events` is a
    413 before any is validated."""
    if too_deep(raw):
        raise RequestError(400, f"the JSON nests deeper than {MAX_DEPTH} levels", "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}", "body") from exc
    items, prefix = unwrap(body)
    if not items:
        raise RequestError(400, "no events in the request", prefix or "body")
    if max_events is not None and len(items) > max_events:
        problem = f"{len(items)} events, over {max_events} (max_events)"
        raise RequestError(413, problem, prefix or "body")
    context = {NUL_FREE: b"\\u0000" not in raw}
    try:
        # The whole list in one call (the validator's loop, not ours); the errors of a
        # refused one are found item by item below, each named by its index.
        return _EVENTS.validate_python(items, context=context)
    except ValidationError:
        pass
    parsed: list[DoctorEvent] = []
    errors: list[dict[str, str]] = []
    many = isinstance(body, list) or prefix == "events"
    for i, item in enumerate(items):
        try:
            parsed.append(DoctorEvent.model_validate(item, context=context))
        except ValidationError as exc:
            where = f"{prefix}[{i}]" if many else prefix
            for err in validation_errors(list(exc.errors())):
                field = err["field"] if err["field"] != "body" else ""
                path = ".".join(p for p in (where, field) if p)
                errors.append({"field": path or "body", "problem": err["problem"]})
    if errors:
        raise InvalidEvents(errors)
    return parsed


def to_events(parsed: list[DoctorEvent], reporter: str) -> list[Event]:
    """The events of a request, from `reporter`, each with an id of its own."""
    return [p.to_event(reporter, i) for p, i in zip(parsed, new_ids(len(parsed)), strict=True)]


class InvalidEvents(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors


# What a request's events name, by kind: each must be known to the service.
NAME_KINDS = ("hosts", "resources", "servers")
Names = dict[str, list[str]]


def names_in(parsed: list[DoctorEvent]) -> dict[str, set[str]]:
    """The hosts, graph resources and servers the events name."""
    return {
        "hosts": {e.subject for e in parsed if e.type != RESOURCE_DOWN},
        "resources": {e.subject for e in parsed if e.type == RESOURCE_DOWN},
        "servers": {
            sid for e in parsed if (sid := e.details.instance_id) and e.type in INSTANCE_EVENTS
        },
    }


_UNKNOWN = {
    "hosts": ("unknown host(s)", "details.hostname"),
    "resources": ("unknown resource(s) in the entity graph", "details.resource_id"),
    "servers": ("unknown server(s)", "details.instance_id"),
}


def refuse_unknown(wanted: dict[str, set[str]], known: Callable[[str, str], bool]) -> None:
    """A 422 naming the first kind of name (hosts, resources, servers) with unknown ones."""
    for kind in NAME_KINDS:
        unknown = sorted(n for n in wanted.get(kind, ()) if not known(kind, n))
        if unknown:
            problem, field = _UNKNOWN[kind]
            raise RequestError(422, f"{problem}: {', '.join(unknown)}", field)


def knows(service: Facade) -> Callable[[str, str], bool]:
    """Whether the service knows a name of a kind."""
    # Membership tests only, never a walk of the topology: it is 10,000 servers in a
    # storm, and the front loop (app/front.py) reads it while the service's loop changes it.
    hosts, servers, graph = service.hosts(), service.servers(), service.graph

    def known(kind: str, name: str) -> bool:
        if kind == "hosts":
            return name in hosts
        if kind == "servers":
            return name in servers
        return (v := graph.get(name)) is not None and not v.placeholder

    return known


def check_known(service: Facade, parsed: list[DoctorEvent]) -> None:
    """A 422 unless every host, server and graph resource the events name is known."""
    refuse_unknown(names_in(parsed), knows(service))


def known_names(service: Facade, asked: Names) -> Names:
    """Of the names asked (by kind), those the service knows (the front process asks)."""
    known = knows(service)
    return {
        kind: [n for n in names if known(kind, n)]
        for kind, names in asked.items()
        if kind in NAME_KINDS and isinstance(names, list)
    }


class EventIntake(Protocol):
    """Where the events API hands what it accepts: the service (`ServiceIntake`), or the
    service through the front process (app/front_process.py)."""

    async def check(self, parsed: list[DoctorEvent]) -> None:
        """A 422 (`RequestError`) unless every name the events give is known."""

    async def submit(self, events: list[Event]) -> None:
        """Accept the events: durable and on their way to be handled when this returns."""


class ServiceIntake:
    def __init__(self, service: Facade) -> None:
        self.service = service

    async def check(self, parsed: list[DoctorEvent]) -> None:
        check_known(self.service, parsed)

    async def submit(self, events: list[Event]) -> None:
        await self.service.submit(events)


async def _accept(request: Request, reporter: str) -> JSONResponse:
    intake: EventIntake = request.app.state.intake
    raw = await request.body()
    try:
        parsed = parse(raw)
    except InvalidEvents as exc:
        return JSONResponse(error_body(400, exc.errors), status_code=400)
    if (too_many := refused(request.app.state.events_rate, reporter, len(parsed))) is not None:
        return too_many
    await intake.check(parsed)
    events = to_events(parsed, reporter)
    await intake.submit(events)
    return JSONResponse({"accepted": [e.id for e in events]}, status_code=202)


_DOC = "Accepts a list, a bare event, or {'event': ...} / {'events': [...]}."
# The body is parsed by hand (to accept every shape), so its schema is declared here.
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/DoctorEvent"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/DoctorEvent"}},
                        {
                            "type": "object",
                            "properties": {"event": {"$ref": "#/components/schemas/DoctorEvent"}},
                        },
                        {
                            "type": "object",
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/DoctorEvent"},
                                }
                            },
                        },
                    ]
                },
                "example": [
                    {
                        "time": "2026-11-29T10:00:00.000000",
                        "type": "compute.host.down",
                        "details": {
                            "hostname": "compute1",
                            "status": "down",
                            "monitor": "sample",
                            "monitor_event_id": "1",
                        },
                    }
                ],
            }
        },
    }
}
_ROUTE: dict[str, Any] = {"description": _DOC, "status_code": 202, "openapi_extra": _BODY}


@router.put("/events", summary="Report fault events (Doctor inspector API)", **_ROUTE)
async def put_events(request: Request, reporter: Monitor) -> JSONResponse:
    return await _accept(request, reporter)


@router.post("/events", summary="Report fault events (POST form)", **_ROUTE)
async def post_events(request: Request, reporter: Monitor) -> JSONResponse:
    return await _accept(request, reporter)


@router.post("/v1/event", summary="Report fault events (Vitrage form)", **_ROUTE)
async def post_vitrage_event(request: Request, reporter: Monitor) -> JSONResponse:
    return await _accept(request, reporter)
