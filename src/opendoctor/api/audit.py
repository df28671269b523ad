"""The audit trail: every request that may change something, who sent it, and the answer.

Recorded by a middleware, not by each route, so that a route added later is audited
without anyone remembering to: every POST, PUT, PATCH and DELETE but the monitors'
events (the event store keeps those, with the monitor that sent each). A caller the
API identified gets a row in the database, readable by admins at `GET /v1/audit`; every
entry, identified or not, is also a line in the `opendoctor.audit` log, so that a
refused stranger leaves a trace without being able to fill the database.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opendoctor.api.auth import current_identity
from opendoctor.api.facade import Facade
from opendoctor.api.native import require_admin
from opendoctor.core.audit import AuditEntry, AuditQuery
from opendoctor.core.identity import Identity
from opendoctor.core.redact import redact

log = logging.getLogger("opendoctor.audit")

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_AUDITED = frozenset({"/events", "/v1/event"})  # the event store records the reporter
_STATE_IDENTITY = "identity"  # set by auth.current_identity
_STATE_TARGET = "audit_target"

router = APIRouter(prefix="/v1", tags=["operations"])


def audit_target(request: Request, target: str) -> None:
    """For the audit trail: what a change was about, where its path does not say (the id
    a create made, the name of a template)."""
    setattr(request.state, _STATE_TARGET, target)


class AuditTrail:
    """ASGI middleware: for each change request, hand an `AuditEntry` to the service
    before the answer goes out."""

    def __init__(self, app: ASGIApp, service: Facade) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in CHANGES
            or scope["path"] in NOT_AUDITED
        ):
            await self.app(scope, receive, send)
            return
        recorded = False

        async def sending(message: Message) -> None:
            # Stored before the answer leaves: a caller who reads the trail after its
            # change was answered finds the change there.
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(_entry(scope, message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not recorded:  # the server answers 500 for what escaped the app
                await self._record(_entry(scope, 500))
            raise

    async def _record(self, entry: AuditEntry) -> None:
        fields = {k: v for k, v in entry.to_dict().items() if v not in (None, [])}
        log.info("audit %s %s %d", entry.method, entry.path, entry.status, extra=fields)
        if entry.project_id is None:
            return
        try:
            await self.service.record_audit(entry)
        except Exception as exc:
            # The change itself is done (or refused) and answered: the log line above
            # is the record now.
            log.warning("audit entry not stored", extra={"error": str(exc), **fields})


def _entry(scope: Scope, status: int) -> AuditEntry:
    state: dict[str, Any] = scope.get("state") or {}
    identity = state.get(_STATE_IDENTITY)
    route = scope.get("route")
    headers = dict(scope.get("headers") or [])
    request_id = headers.get(b"x-openstack-request-id", b"").decode("latin-1") or None
    client = scope.get("client")
    entry = AuditEntry(
        at=time.time(),
        method=scope["method"],
        path=redact(scope["path"]),
        route=getattr(route, "path_format", None) or scope["path"],
        status=status,
        target=state.get(_STATE_TARGET),
        request_id=request_id[:64] if request_id else None,
        peer=client[0] if client else None,
    )
    if isinstance(identity, Identity):
        entry.project_id = identity.project_id
        entry.user_id = identity.user_id or None
        entry.roles = sorted(identity.roles)
    return entry


@router.get("/audit", summary="Who changed what through the API, newest first (admin)")
async def list_audit(
    request: Request,
    identity: Identity = Depends(current_identity),
    project_id: str | None = Query(None, max_length=255, description="the caller's project"),
    user_id: str | None = Query(None, max_length=255, description="the caller's user"),
    since: datetime | None = Query(None, description="only entries from then on (ISO 8601)"),
    limit: int = Query(100, ge=1, le=1000),
    marker: int | None = Query(
        None, ge=1, le=2**63 - 1, description="the last id of the page before"
    ),
) -> list[dict[str, Any]]:
    """Every POST, PUT, PATCH and DELETE of an identified caller (all but monitors'
    events): alarms, templates, topology and whatever routes come later. Each entry
    says who (project, user, roles, address), what (method, path, the route, and the
    `target` a create made), when, and the status it was answered with; refused
    requests are there too."""
    require_admin(identity)
    service: Facade = request.app.state.service
    when = since.timestamp() if since is not None else None
    entries = await service.audit_log(AuditQuery(project_id, user_id, when, marker, limit))
    return [e.to_dict() for e in entries]
