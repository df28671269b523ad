"""Native `/v1` routes: resources, faults with their timelines, notifications.

The entity graph's routes (topology, alarms, RCA) are in `api.graph`."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request

from opendoctor.api.auth import current_identity
from opendoctor.api.facade import Facade
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.notifications import OutboxEntry
from opendoctor.core.redact import redact

router = APIRouter(prefix="/v1", tags=["native"])

T = TypeVar("T")


def service_of(request: Request) -> Facade:
    service: Facade = request.app.state.service
    return service


def inspecting(request: Request, what: str) -> Facade:
    """The service, if this process keeps the faults' graph and the rule templates (the
    inspector role, or an api process that mirrors them); else 503 (a monitor, say)."""
    service = service_of(request)
    if not service.keeps_graph:
        roles = ", ".join(sorted(service.roles))
        raise RequestError(
            503,
            f"{what} is kept by the inspector and api roles, which this process does not "
            f"run (roles: {roles})",
        )
    return service


# Paging: at most `limit` items, the next page after `marker` (the last id of the one
# before), as /v2/alarms does.
Marker = Annotated[
    str | None,
    Query(max_length=255, description="the last id (or name) of the page before"),
]


def page_in_memory(
    items: Iterable[T], key: Callable[[T], str], limit: int, marker: str | None
) -> list[T]:
    """A page of an in-memory list, in the order of `key`: the items after `marker`."""
    ordered = sorted(items, key=key)
    if marker is not None:
        ordered = ordered[bisect_right([key(i) for i in ordered], marker) :]
    return ordered[:limit]


@contextmanager
def known_marker() -> Iterator[None]:
    try:
        yield
    except LookupError as exc:
        raise RequestError(400, f"no item {exc.args[0]!r} to page after", "marker") from exc


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
    request: Request,
    identity: Identity = Depends(current_identity),
    limit: int = Query(1000, ge=1, le=10_000),
    marker: Marker = None,
) -> list[dict[str, Any]]:
    """By name."""
    require_admin(identity)
    service = service_of(request)
    hosts = page_in_memory(service.hosts().values(), lambda h: h.name, limit, marker)
    return [dict(asdict(h), servers=len(service.servers_on(h.name))) for h in hosts]


@router.get("/servers", summary="Servers with their host, project and state")
async def list_servers(
    request: Request,
    identity: Identity = Depends(current_identity),
    host: str | None = Query(None, description="only servers on this host"),
    limit: int = Query(1000, ge=1, le=100_000),
    marker: Marker = None,
) -> list[dict[str, Any]]:
    """By id."""
    service = service_of(request)
    servers = service.servers_on(host) if host else service.servers().values()
    mine = (s for s in servers if identity.can_see(s.project_id))
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
        for s in page_in_memory(mine, lambda s: s.id, limit, marker)
    ]


@router.get("/faults", summary="Faults, newest first (admin)")
async def list_faults(
    request: Request,
    identity: Identity = Depends(current_identity),
    status: str | None = Query(None, pattern="^(active|cleared)$"),
    limit: int = Query(100, ge=1, le=10_000),
    marker: Marker = None,
) -> list[dict[str, Any]]:
    require_admin(identity)
    with known_marker():
        faults = await service_of(request).faults(status, limit, marker)
    return [f.to_dict() for f in faults]


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
    marker: Marker = None,
) -> list[dict[str, Any]]:
    """Oldest first."""
    require_admin(identity)
    with known_marker():
        entries = await service_of(request).notifications(fault_id, status, limit, marker)
    return [_notification(e) for e in entries]


@router.get("/events", summary="Recently accepted southbound events (admin)")
async def list_events(
    request: Request,
    identity: Identity = Depends(current_identity),
    limit: int = Query(100, ge=1, le=10_000),
    marker: Marker = None,
) -> list[dict[str, Any]]:
    """Newest first."""
    require_admin(identity)
    with known_marker():
        return await service_of(request).recent_events(limit, marker)
