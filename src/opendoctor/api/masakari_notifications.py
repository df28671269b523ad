"""Masakari's notifications: what masakari-monitors post (`POST`), and how they went
(statuses, `recovery_workflow_details`, vmoves), under `/instance-ha/v1` as
`api.masakari` includes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError

from opendoctor.api.audit import audit_target
from opendoctor.api.masakari_schema import (
    E403,
    E406,
    NOTIFICATION_SORT,
    READ,
    Caller,
    Id,
    Limit,
    Marker,
    Microversion,
    NotificationBody,
    SortDir,
    SortKey,
    Version,
    sort_order,
)
from opendoctor.api.native import known_marker, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.faults import Fault
from opendoctor.core.model import iso
from opendoctor.core.segments import HaNotification, NotificationStatus
from opendoctor.monitor.masakari import vmoves, workflow_details

router = APIRouter(tags=["instance HA (Masakari)"], responses=READ)


@router.get("/notifications", summary="List notifications, their statuses up to date")
async def list_notifications(
    request: Request,
    _: Caller,
    version: Microversion,
    sort_key: SortKey = [],  # noqa: B006
    sort_dir: SortDir = [],  # noqa: B006
    limit: Limit = 1000,
    marker: Marker = None,
    status: NotificationStatus | None = None,
    type: Annotated[str | None, Query(max_length=16)] = None,
    source_host_uuid: Annotated[str | None, Query(max_length=36)] = None,
    generated_since: Annotated[
        str | None, Query(alias="generated-since", max_length=64, description="ISO 8601")
    ] = None,
) -> dict[str, Any]:
    order = sort_order(sort_key, sort_dir, NOTIFICATION_SORT)
    wanted = {"status": status, "type": type, "source_host_uuid": source_host_uuid}
    filters = {k: v for k, v in wanted.items() if v is not None}
    since = _since(generated_since)
    intake = service_of(request).ha_notifications
    with known_marker():
        found = await intake.page(filters, since, order, limit, marker)
    return {"notifications": [notification_view(n, version) for n in found]}


_TIME = TypeAdapter(datetime)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        at = _TIME.validate_python(text)
    except ValidationError:
        raise RequestError(400, f"{text!r} is not an ISO 8601 time", "generated-since") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


@router.post(
    "/notifications",
    status_code=202,
    summary="Report a failure, as masakari-monitors do",
    responses={
        **E403,
        **E406,
        409: {"description": "the host is on maintenance, or the notification a duplicate"},
    },
)
async def create_notification(
    body: NotificationBody, request: Request, identity: Caller, version: Microversion
) -> dict[str, Any]:
    given = body.notification
    reporter = f"masakari:{identity.user_id or identity.project_id}"
    note = await service_of(request).ha_notifications.create(
        given.type, given.hostname, given.generated_at, given.payload, reporter
    )
    audit_target(request, note.id)
    return {"notification": notification_view(note, version)}


async def _notification(
    request: Request, notification_id: str
) -> tuple[HaNotification, Fault | None]:
    found = await service_of(request).ha_notifications.get(notification_id)
    if found is None:
        raise RequestError(404, f"no notification {notification_id}", "notification_id")
    return found


@router.get("/notifications/{notification_id}", summary="Show a notification and its progress")
async def show_notification(
    notification_id: Id, request: Request, _: Caller, version: Microversion
) -> dict[str, Any]:
    note, fault = await _notification(request, notification_id)
    return {"notification": notification_view(note, version, fault, detail=True)}


@router.get(
    "/notifications/{notification_id}/vmoves",
    summary="The servers a host notification's recovery moved (microversion 1.3)",
    responses={400: {"description": "not a COMPUTE_HOST notification"}},
)
async def list_vmoves(
    notification_id: Id,
    request: Request,
    _: Caller,
    version: Microversion,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Limit = 1000,
    marker: Marker = None,
) -> dict[str, Any]:
    moves = await _moves(request, notification_id, version)
    if status is not None:
        moves = [m for m in moves if m["status"] == status]
    if marker is not None:
        at = next((i for i, m in enumerate(moves) if m["id"] == marker), None)
        if at is None:
            raise RequestError(400, f"no item {marker!r} to page after", "marker")
        moves = moves[at + 1 :]
    return {"vmoves": moves[:limit]}


@router.get(
    "/notifications/{notification_id}/vmoves/{vmove_id}",
    summary="One server a host notification's recovery moved (microversion 1.3)",
    responses={400: {"description": "not a COMPUTE_HOST notification"}},
)
async def show_vmove(
    notification_id: Id, vmove_id: Id, request: Request, _: Caller, version: Microversion
) -> dict[str, Any]:
    moves = await _moves(request, notification_id, version)
    move = next((m for m in moves if m["id"] == vmove_id), None)
    if move is None:
        raise RequestError(404, f"no vmove {vmove_id}", "vmove_id")
    return {"vmove": move}


async def _moves(request: Request, notification_id: str, version: Version) -> list[dict[str, Any]]:
    if version < (1, 3):
        raise RequestError(404, "vmoves need microversion 1.3", "OpenStack-API-Version")
    note, fault = await _notification(request, notification_id)
    if note.type != "COMPUTE_HOST":
        raise RequestError(400, f"a {note.type} notification moves no server", "notification_id")
    return vmoves(note, fault)


def _when(at: float | None) -> str | None:
    return None if at is None else iso(at)


def notification_view(
    note: HaNotification, version: Version, fault: Fault | None = None, detail: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": note.id,
        "notification_uuid": note.id,
        "type": note.type,
        "hostname": note.hostname,
        "generated_time": iso(note.generated_time),
        "payload": note.payload,
        "status": note.status,
        "source_host_uuid": note.source_host_uuid,
        "failover_segment_uuid": note.failover_segment_uuid,
        "message": note.message,
        "created_at": _when(note.created_at),
        "updated_at": _when(note.updated_at),
        "deleted": False,
        "deleted_at": None,
    }
    if detail:
        # opendoctor's: the fault it opened or joined (`GET /v1/faults/{id}`); only where
        # one notification is shown (a list does not look its faults up).
        out["fault_id"] = None if fault is None else fault.id
        if version >= (1, 1):
            out["recovery_workflow_details"] = workflow_details(note, fault)
    return out
