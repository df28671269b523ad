"""The host link: how a compute host's agent carries its guests' server-group messages to
the service and takes the service's back (docs/server-groups.md).

- `POST /v1/hostlink/{host}/messages`: up messages, `{"messages": [...]}`, all or nothing
  (one bad message refuses the request and nothing of it is routed);
- `GET /v1/hostlink/{host}/stream`: the down messages for the host's VMs, as NDJSON (one
  object a line, `{"type": "ping"}` every `PING` seconds); a newer stream for a host
  replaces the older;
- `GET /v1/hostlink`: which hosts are connected here, and the counts (admins).

Who may speak for a host: a monitor, with its token as `PUT /v1/events` takes it (the
host agent already has one for its events) and named in `guestlink.monitors` (every
monitor by default), never an anonymous caller; the host must be one the service knows.
Which monitor last spoke for each host shows in `GET /v1/hostlink` (and a change of it is
logged). A host speaks only for the VMs the topology places on it: the router checks
each message, whatever the monitor.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from starlette.background import BackgroundTask

from opendoctor.api.auth import ANONYMOUS, current_identity, monitor_of
from opendoctor.api.errors import error_body, validation_errors
from opendoctor.api.facade import Facade
from opendoctor.api.ratelimit import RateLimit, refused
from opendoctor.api.schema import request_body
from opendoctor.core.errors import RequestError
from opendoctor.core.guestlink_settings import MAX_PAYLOAD, GuestLinkSettings
from opendoctor.core.identity import Identity
from opendoctor.heartbeat.route_streams import HostStream

router = APIRouter(prefix="/v1/hostlink", tags=["host link (server-group messaging)"])

PING = 10.0
MEDIA_TYPE = "application/x-ndjson"
PING_LINE = b'{"type":"ping"}\n'
MAX_REASON = 512
MAX_SERVICES = 64

Monitor = Annotated[str, Depends(monitor_of)]
HostName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^:/\x00-\x1f]+$")]
Id = Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
Reason = Annotated[StrictStr | None, Field(max_length=MAX_REASON)]


class HostLink(Protocol):
    """What the routes need of the guest link running in this process."""

    @property
    def settings(self) -> GuestLinkSettings: ...

    def speaker(self, host: str, monitor: str) -> None:
        """Let `monitor` speak for `host` (and record it), or raise a 403 `RequestError`."""

    def accept(self, host: str, messages: list[dict[str, Any]]) -> None:
        """Route what `host` posted (valid in shape)."""

    def open(self, host: str) -> HostStream: ...

    def release(self, stream: HostStream) -> None: ...

    def status(self) -> dict[str, Any]: ...


class _Up(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class GroupSend(_Up):
    type: Literal["group-send"]
    from_: Id = Field(alias="from")
    group: Id | None = None
    payload: StrictStr
    msg_id: Id

    @field_validator("payload")
    @classmethod
    def _fits(cls, value: str) -> str:
        size = len(value.encode())
        if size > MAX_PAYLOAD:
            raise ValueError(f"{size} bytes of UTF-8, over {MAX_PAYLOAD}")
        return value


class StatusRequest(_Up):
    type: Literal["status-request"]
    from_: Id = Field(alias="from")
    request_id: Id
    group: Id | None = None


class InstanceState(_Up):
    type: Literal["instance-state"]
    instance_id: Id
    state: Literal["started", "stopped", "failed"]
    reason: Reason = None


class ServiceItem(_Up):
    name: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
    healthy: StrictBool
    reason: Reason = None


class ServiceState(_Up):
    type: Literal["service-state"]
    instance_id: Id
    services: list[ServiceItem] = Field(max_length=MAX_SERVICES)


class RestartResult(_Up):
    type: Literal["restart-result"]
    request_id: Id
    ok: StrictBool
    reason: Reason = None


UpMessage = Annotated[
    GroupSend | StatusRequest | InstanceState | ServiceState | RestartResult,
    Field(discriminator="type"),
]


class UpBody(BaseModel):
    """What a host posts."""

    messages: list[UpMessage] = Field(min_length=1)


_TAGS = frozenset(
    {"group-send", "status-request", "instance-state", "service-state", "restart-result"}
)
_MESSAGES: TypeAdapter[list[UpMessage]] = TypeAdapter(list[UpMessage])


class Accepted(BaseModel):
    accepted: int


def link_of(request: Request) -> HostLink:
    link: HostLink | None = request.app.state.hostlink
    if link is None:
        raise RequestError(503, "the host link does not run in this process")
    return link


def _host(request: Request, host: str, monitor: str) -> HostLink:
    """The link, once `monitor` may speak for `host` (401/403/404 otherwise)."""
    if monitor == ANONYMOUS:
        raise RequestError(
            401,
            "the host link takes only monitors with a token (api.monitor_tokens)",
            "X-Auth-Token",
        )
    link = link_of(request)
    service: Facade = request.app.state.service
    if host not in service.hosts():
        raise RequestError(404, f"no host {host!r} is known", "host")
    link.speaker(host, monitor)
    return link


def parse(raw: bytes, settings: GuestLinkSettings) -> list[dict[str, Any]]:
    """The messages of a body, valid in shape; a `RequestError` naming the field if not."""
    if len(raw) > settings.max_body_bytes:
        problem = f"{len(raw)} bytes, over {settings.max_body_bytes} (guestlink.max_body_bytes)"
        raise RequestError(413, problem, "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}", "body") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise RequestError(400, 'an object {"messages": [...]} is required', "messages")
    items = body["messages"]
    if not items:
        raise RequestError(400, "no messages", "messages")
    if len(items) > settings.max_messages:
        problem = f"{len(items)} messages, over {settings.max_messages} (guestlink.max_messages)"
        raise RequestError(413, problem, "messages")
    try:
        parsed = _MESSAGES.validate_python(items)
    except ValidationError as exc:
        raise InvalidMessages(exc) from None
    return [m.model_dump(by_alias=True) for m in parsed]


class InvalidMessages(Exception):
    def __init__(self, error: ValidationError) -> None:
        self.errors: list[dict[str, str]] = []
        errors: list[dict[str, Any]] = [dict(e) for e in error.errors()]
        for err in errors:
            # [3, "group-send", "payload"]: the tag pydantic puts in is no field of the body.
            loc = err.get("loc", ())
            if len(loc) > 1 and loc[1] in _TAGS:
                err["loc"] = (loc[0], *loc[2:])
        for item in validation_errors(errors):
            field = item["field"]
            # The adapter's paths start at the list: [3].payload -> messages[3].payload.
            named = field if field.startswith("messages") else f"messages{field}"
            self.errors.append({"field": named, "problem": item["problem"]})


def _over_rate(request: Request, host: str, count: int) -> JSONResponse | None:
    limit: RateLimit = request.app.state.hostlink_rate
    settings = ("guestlink.host_rate", "guestlink.host_burst")
    return refused(
        limit, host, count, who="host", unit="messages", field="messages", settings=settings
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no monitor token, or one that is not known (anonymous too)"},
    403: {"description": "a monitor that guestlink.monitors does not name"},
    404: {"description": "no such host"},
    503: {"description": "the host link does not run in this process"},
}
_POST_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"description": "a malformed body, or a message with a bad field (named)"},
    413: {"description": "more messages or bytes than guestlink.max_messages/max_body_bytes"},
    429: {"description": "the host is over its rate (guestlink.host_rate): after Retry-After"},
}
# The body is parsed by hand (to bound it before pydantic sees it): its schema, declared.
_BODY = request_body(UpBody.model_json_schema(by_alias=True))


@router.post(
    "/{host}/messages",
    summary="Up messages from a host: its guests' group sends and status requests, its VMs' "
    "states, their services' health, restart results",
    status_code=202,
    response_model=Accepted,
    responses=_POST_ERRORS,
    openapi_extra=_BODY,
)
async def post_messages(host: HostName, request: Request, monitor: Monitor) -> JSONResponse:
    link = _host(request, host, monitor)
    try:
        messages = parse(await request.body(), link.settings)
    except InvalidMessages as exc:
        return JSONResponse(error_body(400, exc.errors), status_code=400)
    too_many = _over_rate(request, host, len(messages))
    if too_many is not None:
        return too_many
    link.accept(host, messages)
    return JSONResponse({"accepted": len(messages)}, status_code=202)


async def lines(stream: HostStream, ping: float) -> AsyncGenerator[bytes, None]:
    """The stream of one host: what is queued for it as it comes, a ping when nothing
    did for `ping` seconds; it ends when the stream is closed (replaced, or the service
    stops)."""
    while True:
        batch = await stream.next_batch(ping)
        if batch:
            yield b"".join(orjson.dumps(m) + b"\n" for m in batch)
        elif stream.closed:
            return
        else:
            yield PING_LINE


@router.get(
    "/{host}/stream",
    summary="Down messages for a host's VMs, as NDJSON, for as long as the host stays",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one JSON object a line; a ping every 10 s",
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        **_ERRORS,
    },
)
async def stream(host: HostName, request: Request, monitor: Monitor) -> StreamingResponse:
    link = _host(request, host, monitor)
    opened = link.open(host)
    return StreamingResponse(
        lines(opened, PING),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # A client gone before the stream's first step never runs the generator's end.
        background=BackgroundTask(link.release, opened),
    )


@router.get(
    "",
    summary="The host link in this process: connected hosts, their monitors, the counts",
    responses={403: {"description": "not an admin"}, 503: _ERRORS[503]},
)
async def status(request: Request, identity: Identity = Depends(current_identity)) -> Any:
    if not identity.is_admin:
        raise RequestError(403, "the host link's status is for admins")
    return link_of(request).status()


def include(app: FastAPI, link: HostLink | None) -> None:
    """The routes, over `link` (None: the guest link does not run here; they answer 503)."""
    app.state.hostlink = link
    settings: GuestLinkSettings = app.state.settings.guestlink
    app.state.hostlink_rate = RateLimit(settings.host_rate, settings.host_burst)
    app.include_router(router)
