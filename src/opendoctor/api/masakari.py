"""Masakari-compatible instance HA API: failover segments, their hosts, notifications.

Served under `/instance-ha` (the path devstack gives Masakari behind a web server), so
that Masakari's `/v1/notifications` does not meet the native `GET /v1/notifications`:
clients find it through the catalog (service type `instance-ha`) or an endpoint
override, as they find Masakari. `/instance-ha/v1/{project_id}/...` is served as well,
as Masakari serves both. Every route but the version documents needs the admin role
(Masakari's default policy). The shapes, statuses and microversions (1.0 to 1.3) are
Masakari's; see docs/masakari.md for what differs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response

from opendoctor.api import masakari_notifications
from opendoctor.api.audit import audit_target
from opendoctor.api.facade import Facade
from opendoctor.api.masakari_schema import (
    HOST_SORT,
    READ,
    SEGMENT_SORT,
    WRITE,
    Caller,
    HostBody,
    HostChangeBody,
    Id,
    Limit,
    Marker,
    Microversion,
    SegmentBody,
    SegmentChangeBody,
    SortDir,
    SortKey,
    host_view,
    require_enabled_version,
    segment_view,
    sort_order,
    version_document,
    version_headers,
    versions_document,
)
from opendoctor.api.native import known_marker, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.segments import RecoveryMethod, Segment, SegmentHost
from opendoctor.store.segments import Conflict

PREFIX = "/instance-ha"
TAGS: list[str | Any] = ["instance HA (Masakari)"]


versions = APIRouter(prefix=PREFIX, tags=TAGS)
v1 = APIRouter(tags=TAGS, responses=READ)


@versions.get("", summary="Masakari's API versions", include_in_schema=False)
@versions.get("/", summary="Masakari's API versions (no identity needed)")
async def list_versions(request: Request) -> dict[str, Any]:
    return versions_document(request)


@versions.get("/v1", summary="Masakari's v1 API version", include_in_schema=False)
@versions.get("/v1/", summary="Masakari's v1 API version (no identity needed)")
async def show_version(request: Request) -> dict[str, Any]:
    return version_document(request)


# --- segments -------------------------------------------------------------------------------


async def _segment(service: Facade, segment_id: str) -> Segment:
    segment = await service.segments.get(segment_id)
    if segment is None:
        raise RequestError(404, f"no failover segment {segment_id}", "segment_id")
    return segment


async def _idle(service: Facade, segment_id: str, what: str) -> None:
    if await service.ha_notifications.under_recovery(segment_id):
        problem = f"{what} cannot change while notifications of its hosts are being handled"
        raise RequestError(409, problem, "segment_id")


@v1.get("/segments", summary="List failover segments (admin)")
async def list_segments(
    request: Request,
    _: Caller,
    __: Microversion,
    sort_key: SortKey = [],  # noqa: B006 (FastAPI copies defaults)
    sort_dir: SortDir = [],  # noqa: B006
    limit: Limit = 1000,
    marker: Marker = None,
    recovery_method: RecoveryMethod | None = None,
    service_type: Annotated[str | None, Query(max_length=255)] = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    order = sort_order(sort_key, sort_dir, SEGMENT_SORT)
    wanted = {"recovery_method": recovery_method, "service_type": service_type}
    filters = {k: v for k, v in (wanted | {"enabled": enabled}).items() if v is not None}
    with known_marker():
        found = await service_of(request).segments.segments(filters, order, limit, marker)
    return {"segments": [segment_view(s) for s in found]}


@v1.post("/segments", status_code=201, summary="Create a failover segment", responses=WRITE)
async def create_segment(
    body: SegmentBody, request: Request, _: Caller, version: Microversion
) -> dict[str, Any]:
    given = body.segment
    require_enabled_version(given, version)
    segment = Segment(
        name=given.name,
        recovery_method=given.recovery_method,
        service_type=given.service_type,
        enabled=given.enabled,
        description=given.description,
        all_servers=given.all_servers,
    )
    try:
        await service_of(request).segments.create(segment)
    except Conflict as exc:
        raise RequestError(409, str(exc), "segment.name") from None
    audit_target(request, segment.id)
    return {"segment": segment_view(segment)}


@v1.get("/segments/{segment_id}", summary="Show a failover segment")
async def show_segment(
    segment_id: Id, request: Request, _: Caller, __: Microversion
) -> dict[str, Any]:
    return {"segment": segment_view(await _segment(service_of(request), segment_id))}


@v1.put("/segments/{segment_id}", summary="Change a failover segment", responses=WRITE)
async def update_segment(
    segment_id: Id, body: SegmentChangeBody, request: Request, _: Caller, version: Microversion
) -> dict[str, Any]:
    require_enabled_version(body.segment, version)
    service = service_of(request)
    await _segment(service, segment_id)
    await _idle(service, segment_id, "the segment")
    try:
        segment = await service.segments.update(
            segment_id, body.segment.model_dump(exclude_unset=True)
        )
    except KeyError:
        raise RequestError(404, f"no failover segment {segment_id}", "segment_id") from None
    except Conflict as exc:
        raise RequestError(409, str(exc), "segment") from None
    return {"segment": segment_view(segment)}


@v1.delete(
    "/segments/{segment_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a failover segment and its hosts",
    responses=WRITE,
)
async def delete_segment(
    segment_id: Id, request: Request, _: Caller, version: Microversion
) -> Response:
    service = service_of(request)
    await _segment(service, segment_id)
    await _idle(service, segment_id, "the segment")
    if not await service.segments.delete(segment_id):
        raise RequestError(404, f"no failover segment {segment_id}", "segment_id")
    return Response(status_code=204, headers=version_headers(version))


# --- hosts ----------------------------------------------------------------------------------


def _known_host(service: Facade, name: str) -> None:
    """As Masakari asks Nova: a host the VIM does not have cannot be recovered."""
    if name not in service.hosts():
        raise RequestError(400, f"the VIM has no compute host {name!r}", "host.name")


async def _host(service: Facade, segment_id: str, host_id: str) -> tuple[SegmentHost, Segment]:
    segment = await _segment(service, segment_id)
    host = await service.segments.host(segment_id, host_id)
    if host is None:
        raise RequestError(404, f"no host {host_id} in segment {segment_id}", "host_id")
    return host, segment


@v1.get("/segments/{segment_id}/hosts", summary="List the hosts of a segment")
async def list_hosts(
    segment_id: Id,
    request: Request,
    _: Caller,
    __: Microversion,
    sort_key: SortKey = [],  # noqa: B006
    sort_dir: SortDir = [],  # noqa: B006
    limit: Limit = 1000,
    marker: Marker = None,
    name: Annotated[str | None, Query(max_length=255)] = None,
    type: Annotated[str | None, Query(max_length=255)] = None,
    on_maintenance: bool | None = None,
    reserved: bool | None = None,
) -> dict[str, Any]:
    service = service_of(request)
    segment = await _segment(service, segment_id)
    order = sort_order(sort_key, sort_dir, HOST_SORT)
    wanted = {"name": name, "type": type, "on_maintenance": on_maintenance, "reserved": reserved}
    filters = {k: v for k, v in wanted.items() if v is not None}
    with known_marker():
        found = await service.segments.hosts(segment_id, filters, order, limit, marker)
    return {"hosts": [host_view(h, segment) for h in found]}


@v1.post("/segments/{segment_id}/hosts", status_code=201, summary="Add a host", responses=WRITE)
async def create_host(
    segment_id: Id, body: HostBody, request: Request, _: Caller, __: Microversion
) -> dict[str, Any]:
    service = service_of(request)
    segment = await _segment(service, segment_id)
    given = body.host
    _known_host(service, given.name)
    host = SegmentHost(
        name=given.name,
        segment_id=segment_id,
        type=given.type,
        control_attributes=given.control_attributes or "",
        reserved=given.reserved,
        on_maintenance=given.on_maintenance,
    )
    try:
        await service.segments.add_host(host)
    except KeyError:
        raise RequestError(404, f"no failover segment {segment_id}", "segment_id") from None
    except Conflict as exc:
        raise RequestError(409, str(exc), "host.name") from None
    audit_target(request, host.id)
    return {"host": host_view(host, segment)}


@v1.get("/segments/{segment_id}/hosts/{host_id}", summary="Show a host of a segment")
async def show_host(
    segment_id: Id, host_id: Id, request: Request, _: Caller, __: Microversion
) -> dict[str, Any]:
    host, segment = await _host(service_of(request), segment_id, host_id)
    return {"host": host_view(host, segment)}


@v1.put("/segments/{segment_id}/hosts/{host_id}", summary="Change a host", responses=WRITE)
async def update_host(
    segment_id: Id,
    host_id: Id,
    body: HostChangeBody,
    request: Request,
    _: Caller,
    __: Microversion,
) -> dict[str, Any]:
    service = service_of(request)
    segment = (await _host(service, segment_id, host_id))[1]
    changes = body.host.model_dump(exclude_unset=True)
    if "name" in changes:
        _known_host(service, changes["name"])
    if changes.get("control_attributes", "") is None:
        changes["control_attributes"] = ""
    await _idle(service, segment_id, "a host of the segment")
    try:
        host = await service.segments.update_host(segment_id, host_id, changes)
    except KeyError:
        raise RequestError(404, f"no host {host_id} in segment {segment_id}", "host_id") from None
    except Conflict as exc:
        raise RequestError(409, str(exc), "host.name") from None
    return {"host": host_view(host, segment)}


@v1.delete(
    "/segments/{segment_id}/hosts/{host_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a host from a segment",
    responses=WRITE,
)
async def delete_host(
    segment_id: Id, host_id: Id, request: Request, _: Caller, version: Microversion
) -> Response:
    service = service_of(request)
    await _host(service, segment_id, host_id)
    await _idle(service, segment_id, "a host of the segment")
    if not await service.segments.delete_host(segment_id, host_id):
        raise RequestError(404, f"no host {host_id} in segment {segment_id}", "host_id")
    return Response(status_code=204, headers=version_headers(version))


NATIVE_NOTIFICATIONS = "/v1/ha"  # /v1/notifications is the native deliveries' list


def include(app: FastAPI) -> None:
    """Add the routes to `app`: under `/instance-ha/v1`, and, out of the document, under
    `/instance-ha/v1/{project_id}` (the catalog URL Masakari is usually given). The
    native API has the same operations: `/v1/segments…`, and the notifications as
    `/v1/ha/notifications…`."""
    app.include_router(versions)
    for router in (v1, masakari_notifications.router):
        app.include_router(router, prefix=f"{PREFIX}/v1")
        # Not in the document: the same operations again.
        app.include_router(router, prefix=f"{PREFIX}/v1/{{project_id}}", include_in_schema=False)
    app.include_router(v1, prefix="/v1", tags=["native"])
    app.include_router(masakari_notifications.router, prefix=NATIVE_NOTIFICATIONS, tags=["native"])
