"""Native `/v1` routes: resources, faults with their timelines, notifications.

The entity graph's routes (topology, alarms, RCA) are in `api.graph`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from opendoctor.api.auth import current_identity
from opendoctor.api.facade import Facade
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.redact import redact

router = APIRouter(prefix="/v1", tags=["native"])


def service_of(request: Request) -> Facade:
    service: Facade = request.app.state.service
    return service


def inspecting(request: Request, what: str) -> Facade:
    """The service, if this process runs the inspector, which holds the faults' graph and
    the rule templates; a process of a split deployment without it answers 503."""
    service = service_of(request)
    if not service.runs("inspector"):
        roles = ", ".join(sorted(service.roles))
        raise RequestError(
            503,
            f"{what} is kept by the inspector role, which this process does not run "
            f"(roles: {roles}); ask a process that runs api and inspector",
        )
    return service


def require_admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise RequestError(403, "this needs the admin role", "X-Roles")


def _notification(entry: OutboxEntry) -> dict[str, Any]:
    event = entry.body.get("reason_data", {}).get("event", {})
    traits = {t[0]: t[2] for t in event.get("traits", [])}
    return {
        "id": entry.id,
        "alarm_id": entry.alarm_id,
        "url": redact(entry.url),  # the consumer's credentials are its tenant's
        "instance_id": traits.get("instance_id"),
        "status": entry.status,
        "attempts": entry.attempts,
        "created": entry.created,
        "delivered": entry.delivered,
        "last_error": entry.last_error,
    }


@router.get("/hosts", summary="Compute hosts as the inspector sees them (admin)")
async def list_hosts(
    request: Request, identity: Identity = Depends(current_identity)
) -> list[dict[str, Any]]:
    require_admin(identity)
    service = service_of(request)
    return [
        dict(asdict(h), servers=len(service.servers_on(h.name))) for h in service.hosts().values()
    ]


@router.get("/servers", summary="Servers with their host, project and state")
async def list_servers(
    request: Request,
    identity: Identity = Depends(current_identity),
    host: str | None = Query(None, description="only servers on this host"),
) -> list[dict[str, Any]]:
    service = service_of(request)
    servers = service.servers_on(host) if host else service.servers().values()
    # Built by hand: dataclasses.asdict deep-copies and is ten times slower.
    return [
        {
            "id": s.id,
            "name": s.name,
            "host": s.host,
            "project_id": s.project_id,
            "status": s.status,
            "endpoint": s.endpoint,
        }
        for s in servers
        if identity.can_see(s.project_id)
    ]


@router.get("/faults", summary="Faults, newest first (admin)")
async def list_faults(
    request: Request,
    identity: Identity = Depends(current_identity),
    status: str | None = Query(None, pattern="^(active|cleared)$"),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    require_admin(identity)
    return [f.to_dict() for f in await service_of(request).faults(status, limit)]


@router.get("/faults/{fault_id}", summary="One fault: timeline, notifications, recovery (admin)")
async def get_fault(
    fault_id: str,
    request: Request,
    identity: Identity = Depends(current_identity),
    notifications: bool = Query(True, description="include every notification's delivery"),
) -> dict[str, Any]:
    require_admin(identity)
    service = service_of(request)
    fault = await service.fault(fault_id)
    if fault is None:
        raise RequestError(404, f"no fault {fault_id}", "fault_id")
    data = fault.to_dict()
    if notifications:
        entries = await service.notifications(fault_id=fault_id, limit=100_000)
        data["notifications"] = [_notification(e) for e in entries]
    return data


@router.get("/notifications", summary="Notification deliveries (admin)")
async def list_notifications(
    request: Request,
    identity: Identity = Depends(current_identity),
    status: str | None = Query(None, pattern="^(pending|delivered|failed)$"),
    fault_id: str | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
) -> list[dict[str, Any]]:
    require_admin(identity)
    entries = await service_of(request).notifications(fault_id, status, limit)
    return [_notification(e) for e in entries]


@router.get("/events", summary="Recently accepted southbound events (admin)")
async def list_events(
    request: Request,
    identity: Identity = Depends(current_identity),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    require_admin(identity)
    return await service_of(request).recent_events(limit)
