"""Masakari's wire shapes: the microversion a request asks for and what every route
takes (the admin role, paging), the version documents, request bodies (bounded, each
error naming its field), and the answers' JSON for segments and hosts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opendoctor.api.auth import current_identity
from opendoctor.api.errors import NUL_TEXT
from opendoctor.api.native import require_admin
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.model import iso
from opendoctor.core.query import Order
from opendoctor.core.segments import RecoveryMethod, Segment, SegmentHost

# --- microversions ---------------------------------------------------------------------------

SERVICE_TYPE = "instance-ha"
MIN_VERSION, MAX_VERSION = (1, 0), (1, 3)
VERSION_HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Masakari-API-Version"
_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")
Version = tuple[int, int]


def _text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def requested_version(request: Request) -> Version:
    """The microversion a request asks for, as Masakari reads it: `OpenStack-API-Version:
    instance-ha X.Y` (or `latest`; the legacy header too), 1.0 without one; a malformed
    one is a 400, one outside what is served a 406."""
    asked: str | None = None
    header = request.headers.get(VERSION_HEADER)
    if header is not None:
        for part in header.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == SERVICE_TYPE:
                asked = value.strip()
    if asked is None:
        asked = request.headers.get(LEGACY_HEADER)
    if asked is None:
        return MIN_VERSION
    if asked.lower() == "latest":
        return MAX_VERSION
    match = _VERSION.match(asked)
    if match is None:
        problem = f"{asked[:20]!r} is not a version such as 1.2"
        raise RequestError(400, problem, VERSION_HEADER)
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        problem = f"version {asked} is not served: {_text(MIN_VERSION)} to {_text(MAX_VERSION)}"
        raise RequestError(406, problem, VERSION_HEADER)
    return version


def version_headers(version: Version) -> dict[str, str]:
    # Masakari names itself here, not its service type; clients do not read it back.
    return {VERSION_HEADER: f"masakari {_text(version)}", "Vary": VERSION_HEADER}


def _links(request: Request) -> tuple[str, str]:
    """The base of the Masakari API, and of its v1."""
    base = str(request.base_url).rstrip("/") + "/instance-ha"
    return base, base + "/v1/"


_V1: dict[str, Any] = {
    "id": "v1.0",
    "status": "CURRENT",
    "version": _text(MAX_VERSION),
    "min_version": _text(MIN_VERSION),
    "updated": "2016-07-01T11:33:21Z",
}


def versions_document(request: Request) -> dict[str, Any]:
    _, v1 = _links(request)
    return {"versions": [{**_V1, "links": [{"rel": "self", "href": v1}]}]}


def version_document(request: Request) -> dict[str, Any]:
    _, v1 = _links(request)
    links = [
        {"rel": "self", "href": v1},
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
    ]
    media = [
        {"base": "application/json", "type": "application/vnd.openstack.masakari+json;version=1"}
    ]
    return {"version": {**_V1, "links": links, "media-types": media}}


# --- what every route takes ----------------------------------------------------------------


async def _admin(identity: Identity = Depends(current_identity)) -> Identity:
    require_admin(identity)
    return identity


async def _version(request: Request, response: Response) -> Version:
    version = requested_version(request)
    response.headers.update(version_headers(version))
    return version


Microversion = Annotated[Version, Depends(_version)]
Caller = Annotated[Identity, Depends(_admin)]
Id = Annotated[str, Path(max_length=255)]
Limit = Annotated[int, Query(ge=1, le=1000, description="most items answered")]
Marker = Annotated[str | None, Query(max_length=36, description="the last uuid of the page before")]
SortKey = Annotated[list[str], Query(description="sort keys, repeated; default created_at")]
SortDir = Annotated[list[str], Query(description="asc or desc, one for all or one per key")]

Responses = dict[int | str, dict[str, Any]]
E403: Responses = {403: {"description": "the admin role is needed (Masakari's default policy)"}}
E404: Responses = {404: {"description": "no such segment, host or notification"}}
E406: Responses = {406: {"description": "a microversion outside the served 1.0-1.3"}}
E409: Responses = {409: {"description": "a name taken, or the segment is handling notifications"}}
READ: Responses = {**E403, **E404, **E406}
WRITE: Responses = {**READ, **E409}


# --- request bodies -------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_TEXT)
    return value


def _name(value: str) -> str:
    # Masakari's `name` format: printable, no whitespace at either end.
    if not value.isprintable() or value != value.strip():
        raise ValueError("printable characters, no whitespace at either end")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_name)]
Text = Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]
HostType = Annotated[str, Field(max_length=255, pattern=r"^[A-Za-z0-9_-]*$")]
Hostname = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9._-]*$")]
Event = Annotated[Literal["STARTED", "STOPPED"], BeforeValidator(_upper)]
_STRICT = ConfigDict(extra="forbid")


def _some_given(model: BaseModel, what: str, nullable: Sequence[str] = ()) -> None:
    """An update names at least one field, and sets no field to null that has to be
    something."""
    if not model.model_fields_set:
        raise PydanticCustomError("missing", "name at least one field to change", {})
    for name in sorted(model.model_fields_set):
        if getattr(model, name) is None and name not in nullable:
            field = f"{what}.{name}"
            raise PydanticCustomError("value_error", "must not be null", {"field": field})


class SegmentIn(BaseModel):
    model_config = _STRICT
    name: Name
    description: Text | None = None
    recovery_method: RecoveryMethod
    service_type: Name
    enabled: bool = Field(True, description="microversion 1.2 and later")
    all_servers: bool = Field(
        False,
        description="opendoctor's: recover every server of the hosts, not only those "
        "with HA_Enabled=True",
    )


class SegmentChange(BaseModel):
    model_config = _STRICT
    name: Name | None = None
    description: Text | None = None
    recovery_method: RecoveryMethod | None = None
    service_type: Name | None = None
    enabled: bool | None = Field(None, description="microversion 1.2 and later")
    all_servers: bool | None = None

    @model_validator(mode="after")
    def _given(self) -> SegmentChange:
        _some_given(self, "segment", nullable=("description",))
        return self


class SegmentBody(BaseModel):
    model_config = _STRICT
    segment: SegmentIn


class SegmentChangeBody(BaseModel):
    model_config = _STRICT
    segment: SegmentChange


def require_enabled_version(segment: BaseModel, version: Version) -> None:
    """`enabled` is Masakari's from 1.2 on: before, the field is unknown (400)."""
    if "enabled" in segment.model_fields_set and version < (1, 2):
        problem = "enabled needs microversion 1.2 or later (OpenStack-API-Version)"
        raise RequestError(400, problem, "segment.enabled")


class HostIn(BaseModel):
    model_config = _STRICT
    name: Name
    type: HostType
    control_attributes: Text | None
    reserved: bool = False
    on_maintenance: bool = False


class HostChange(BaseModel):
    model_config = _STRICT
    name: Name | None = None
    type: HostType | None = None
    control_attributes: Text | None = None
    reserved: bool | None = None
    on_maintenance: bool | None = None

    @model_validator(mode="after")
    def _given(self) -> HostChange:
        _some_given(self, "host", nullable=("control_attributes",))
        return self


class HostBody(BaseModel):
    model_config = _STRICT
    host: HostIn


class HostChangeBody(BaseModel):
    model_config = _STRICT
    host: HostChange


class HostPayload(BaseModel):
    """hostmonitor's: the host's state as the cluster sees it."""

    model_config = _STRICT
    event: Event
    cluster_status: Annotated[Literal["ONLINE", "OFFLINE"], BeforeValidator(_upper)] | None = None
    host_status: Annotated[Literal["NORMAL", "UNKNOWN"], BeforeValidator(_upper)] | None = None


class ProcessPayload(BaseModel):
    """processmonitor's: a process of the host stopped or started."""

    model_config = _STRICT
    process_name: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
    event: Event


class VmPayload(BaseModel):
    """instancemonitor's: a libvirt event of one domain."""

    model_config = _STRICT
    instance_uuid: Annotated[
        str,
        Field(
            pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
            r"[0-9a-fA-F]{12}$"
        ),
    ]
    vir_domain_event: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
    event: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]


PAYLOADS: dict[str, type[BaseModel]] = {
    "COMPUTE_HOST": HostPayload,
    "PROCESS": ProcessPayload,
    "VM": VmPayload,
}


class NotificationIn(BaseModel):
    model_config = _STRICT
    type: Literal["COMPUTE_HOST", "VM", "PROCESS"]
    hostname: Hostname
    generated_time: datetime
    payload: dict[str, Any] = Field(description="by type: see docs/masakari.md")

    @model_validator(mode="after")
    def _payload_fits(self) -> NotificationIn:
        try:
            PAYLOADS[self.type].model_validate(self.payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            field = f"notification.payload.{where}" if where else "notification.payload"
            problem = str(first["msg"]).removeprefix("Value error, ")
            raise PydanticCustomError(
                "value_error",
                "{problem}",
                {"problem": f"{problem} (a {self.type} payload)", "field": field},
            ) from None
        return self

    @property
    def generated_at(self) -> float:
        # masakari-monitors send naive times in UTC.
        stamp = self.generated_time
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


class NotificationBody(BaseModel):
    model_config = _STRICT
    notification: NotificationIn


# --- lists: sort keys and directions ---------------------------------------------------------

SEGMENT_SORT = ("created_at", "updated_at", "name", "recovery_method", "service_type")
HOST_SORT = ("created_at", "updated_at", "name", "type", "reserved", "on_maintenance")
NOTIFICATION_SORT = ("created_at", "updated_at", "generated_time", "type", "status", "hostname")


def sort_order(keys: Sequence[str], dirs: Sequence[str], sortable: Sequence[str]) -> Order:
    """Masakari's `sort_key` and `sort_dir` (repeated): newest first by default, one
    direction for all keys or one per key."""
    if len(keys) > 4:
        raise RequestError(400, "at most 4 sort keys", "sort_key")
    for key in keys:
        if key not in sortable:
            raise RequestError(
                400, f"cannot sort by {key!r}: one of {', '.join(sortable)}", "sort_key"
            )
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise RequestError(400, f"{direction!r} is not asc or desc", "sort_dir")
    keys = list(keys) or ["created_at"]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise RequestError(400, "one sort_dir for all keys, or one per sort_key", "sort_dir")
    directions = list(dirs) * len(keys) if len(dirs) == 1 else list(dirs) or ["desc"] * len(keys)
    if len(set(keys)) != len(keys):
        raise RequestError(400, "a sort key is named twice", "sort_key")
    return [(k, d == "desc") for k, d in zip(keys, directions, strict=True)]


# --- answers -------------------------------------------------------------------------------


def _when(at: float | None) -> str | None:
    return None if at is None else iso(at)


def segment_view(segment: Segment) -> dict[str, Any]:
    # `id` is the uuid too: Masakari's is its row number, which no request takes.
    return {
        "id": segment.id,
        "uuid": segment.id,
        "name": segment.name,
        "description": segment.description,
        "recovery_method": segment.recovery_method,
        "service_type": segment.service_type,
        "enabled": segment.enabled,
        "all_servers": segment.all_servers,
        "created_at": _when(segment.created_at),
        "updated_at": _when(segment.updated_at),
        "deleted": False,
        "deleted_at": None,
    }


def host_view(host: SegmentHost, segment: Segment) -> dict[str, Any]:
    return {
        "id": host.id,
        "uuid": host.id,
        "name": host.name,
        "type": host.type,
        "control_attributes": host.control_attributes,
        "reserved": host.reserved,
        "on_maintenance": host.on_maintenance,
        "failover_segment_id": segment.id,
        "failover_segment": segment_view(segment),
        "created_at": _when(host.created_at),
        "updated_at": _when(host.updated_at),
        "deleted": False,
        "deleted_at": None,
    }
