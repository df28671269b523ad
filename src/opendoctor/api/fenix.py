"""Fenix-compatible planned maintenance API (DESIGN §5, docs/maintenance.md).

The admin starts, follows, pauses and cancels sessions (`/v1/maintenance`); each owner's
application manager reads which of its instances a session is about and answers the
notices it gets (`/v1/maintenance/{session_id}/{project_id}`), and says how its
instances and groups may be moved (`/v1/instance`, `/v1/instance_group`).

Who sees what: sessions are the admin's. A project answers for itself only; it sets,
reads and deletes its own constraints, and another project's answer 404 as ones that do
not exist. The shapes are in `api.fenix_schema`; the work is `maintenance.service`'s.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.auth import current_identity
from opendoctor.api.fenix_schema import (
    E400,
    E403,
    E403_PROJECT,
    E404,
    E409,
    E409_OWNED,
    E413,
    E503,
    Active,
    AdminChange,
    GroupId,
    GroupIn,
    InstanceId,
    InstanceIn,
    Limit,
    ProjectId,
    ProjectReply,
    SessionId,
    SessionIn,
    group_view,
    instance_view,
    session_detail,
    session_listed,
    session_summary,
)
from opendoctor.api.native import require_admin, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.maintenance import InstanceConstraints, InstanceGroupConstraints
from opendoctor.maintenance.service import Maintenance

router = APIRouter(prefix="/v1", tags=["planned maintenance (Fenix)"], responses=E503)


async def _admin(identity: Identity = Depends(current_identity)) -> Identity:
    require_admin(identity)
    return identity


Admin = Annotated[Identity, Depends(_admin)]
Caller = Annotated[Identity, Depends(current_identity)]

ADMIN_READ = {**E403, **E404}
ADMIN_WRITE = {**E400, **E403, **E404, **E409, **E413}


def maintenance_of(request: Request) -> Maintenance:
    found = service_of(request).maintenance
    if found is None:
        raise RequestError(
            503,
            "planned maintenance does not run in this process (maintenance.enabled, roles)",
            "",
        )
    return found


def _same(given: str | None, path: str, field: str) -> None:
    if given is not None and given != path:
        raise RequestError(400, f"{given!r} differs from the path's {path!r}", field)


def _for_project(identity: Identity, project_id: str) -> None:
    """The owners' routes name a project: only it (or the admin) acts for it. Checked
    before the session is looked up, so the answer tells nothing of it."""
    if not identity.can_see(project_id):
        raise RequestError(
            403,
            f"the caller acts for project {identity.project_id}, not {project_id}",
            "project_id",
        )


# --- sessions (admin) -------------------------------------------------------------------------


@router.post(
    "/maintenance",
    summary="Start a maintenance session (admin)",
    responses=ADMIN_WRITE,
)
async def create_session(body: SessionIn, request: Request, _: Admin) -> dict[str, Any]:
    """`{"session_id"}` (200, as Fenix answers). The hosts are maintained one after
    another from `maintenance_at` on, each once its owners' instances are off it."""
    session = await maintenance_of(request).create(
        body.hosts,
        body.starts_at(),
        body.workflow,
        body.metadata,
        [a.model_dump() for a in body.actions],
    )
    audit_target(request, session.session_id)
    return {"session_id": session.session_id}


@router.get("/maintenance", summary="List maintenance sessions, newest first (admin)")
async def list_sessions(
    request: Request, _: Admin, active: Active = None, limit: Limit = 200
) -> dict[str, Any]:
    found = await maintenance_of(request).sessions(active, limit)
    return {"sessions": [session_listed(s) for s in found]}


@router.get(
    "/maintenance/{session_id}",
    summary="A session's state and progress (admin)",
    responses=ADMIN_READ,
)
async def show_session(session_id: SessionId, request: Request, _: Admin) -> dict[str, Any]:
    return session_summary(await maintenance_of(request).get(session_id))


# Before the owners' `/{session_id}/{project_id}`: a project named "detail" cannot use it.
@router.get(
    "/maintenance/{session_id}/detail",
    summary="Everything of a session: each host, instance and project, its log (admin)",
    responses=ADMIN_READ,
)
async def session_details(session_id: SessionId, request: Request, _: Admin) -> dict[str, Any]:
    return session_detail(await maintenance_of(request).get(session_id))


@router.put(
    "/maintenance/{session_id}",
    summary="Pause or resume a session (admin)",
    responses=ADMIN_WRITE,
)
async def change_session(
    session_id: SessionId, body: AdminChange, request: Request, _: Admin
) -> dict[str, Any]:
    """A session that has ended answers 409."""
    session = await maintenance_of(request).admin_action(session_id, body.action)
    return session_summary(session)


@router.delete(
    "/maintenance/{session_id}",
    summary="Cancel a session (admin)",
    responses={**E403, **E404},
)
async def cancel_session(session_id: SessionId, request: Request, _: Admin) -> dict[str, Any]:
    """It stops at its next safe point: a move under way ends, a host out of service is
    returned to it. The summary says `MAINTENANCE_CANCELLED` once it has stopped. A
    session that has ended is left as it is, and answers 200 too: Doctor's admin tool
    deletes each session once it is done, and fails on anything else."""
    m = maintenance_of(request)
    try:
        return session_summary(await m.cancel(session_id))
    except RequestError as exc:
        if exc.status != 409:
            raise
    return session_summary(await m.get(session_id))


# --- the owners' side of a session ----------------------------------------------------------


@router.get(
    "/maintenance/{session_id}/{project_id}",
    summary="The project's instances the session is about",
    responses={**E403_PROJECT, **E404},
)
async def project_instances(
    session_id: SessionId, project_id: ProjectId, request: Request, identity: Caller
) -> dict[str, Any]:
    """`{"instance_ids": [...]}`: on the session's hosts now, or moved by it. A body
    (Doctor's app manager sends `{"session_id"}` with this GET) is ignored."""
    _for_project(identity, project_id)
    found = await maintenance_of(request).project_instances(session_id, project_id)
    return {"instance_ids": found}


@router.put(
    "/maintenance/{session_id}/{project_id}",
    summary="The project's answer to a notice",
    responses={**E400, **E403_PROJECT, **E404, **E409, **E413},
)
async def project_reply(
    session_id: SessionId,
    project_id: ProjectId,
    body: ProjectReply,
    request: Request,
    identity: Caller,
) -> dict[str, Any]:
    """`ACK_<state>` or `NACK_<state>` for the state the project was last asked (else
    409), with its `instance_ids` (MAINTENANCE) or `instance_actions` (PREPARE_ and
    PLANNED_MAINTENANCE)."""
    _for_project(identity, project_id)
    _same(body.session_id, session_id, "session_id")
    m = maintenance_of(request)
    actions: dict[str, str] | None = None
    if body.instance_actions is not None:
        actions = dict(body.instance_actions)
    elif body.instance_action is not None:
        mine = await m.project_instances(session_id, project_id)
        actions = dict.fromkeys(mine, body.instance_action)
    await m.project_reply(session_id, project_id, body.state, body.instance_ids, actions)
    return {}


# --- constraints --------------------------------------------------------------------------


def _owner(identity: Identity, given: str | None, stored: str | None, field: str) -> str:
    """Whose constraints these are: the caller's project; the admin's may name any (by
    default, whose they already are)."""
    if identity.is_admin:
        return given or stored or identity.project_id
    if given is not None and given != identity.project_id:
        raise RequestError(
            403, f"the caller acts for project {identity.project_id}, not {given}", "project_id"
        )
    if stored is not None and stored != identity.project_id:
        raise RequestError(409, "the id is another project's", field)
    return identity.project_id


async def _group(m: Maintenance, identity: Identity, group_id: str) -> InstanceGroupConstraints:
    group = await m.get_group(group_id)
    if not identity.can_see(group.project_id):
        raise RequestError(404, f"no constraints for instance group {group_id}", "group_id")
    return group


async def _stored_group(m: Maintenance, group_id: str) -> InstanceGroupConstraints | None:
    try:
        return await m.get_group(group_id)
    except RequestError as exc:
        if exc.status == 404:
            return None
        raise


async def _instance(m: Maintenance, identity: Identity, instance_id: str) -> InstanceConstraints:
    instance = await m.get_instance(instance_id)
    if not identity.can_see(instance.project_id):
        raise RequestError(404, f"no constraints for instance {instance_id}", "instance_id")
    return instance


async def _stored_instance(m: Maintenance, instance_id: str) -> InstanceConstraints | None:
    try:
        return await m.get_instance(instance_id)
    except RequestError as exc:
        if exc.status == 404:
            return None
        raise


CONSTRAINTS_WRITE = {**E400, **E403_PROJECT, **E409_OWNED, **E413}


@router.put(
    "/instance_group/{group_id}",
    summary="Set an instance group's constraints",
    responses=CONSTRAINTS_WRITE,
)
async def put_group(
    group_id: GroupId, body: GroupIn, request: Request, identity: Caller
) -> dict[str, Any]:
    _same(body.group_id, group_id, "group_id")
    m = maintenance_of(request)
    stored = await _stored_group(m, group_id)
    owner = stored.project_id if stored is not None else None
    project = _owner(identity, body.project_id, owner, "group_id")
    # The record's fields are the body's, but for the ids, which were checked above.
    given = body.model_dump(exclude={"group_id", "project_id"})
    group = InstanceGroupConstraints(group_id=group_id, project_id=project, **given)
    return group_view(await m.put_group(group))


@router.get(
    "/instance_group/{group_id}",
    summary="Show an instance group's constraints",
    responses=E404,
)
async def get_group(group_id: GroupId, request: Request, identity: Caller) -> dict[str, Any]:
    return group_view(await _group(maintenance_of(request), identity, group_id))


@router.delete(
    "/instance_group/{group_id}",
    status_code=204,
    response_class=Response,
    summary="Forget an instance group's constraints",
    responses=E404,
)
async def delete_group(group_id: GroupId, request: Request, identity: Caller) -> Response:
    m = maintenance_of(request)
    await _group(m, identity, group_id)
    await m.delete_group(group_id)
    return Response(status_code=204)


@router.put(
    "/instance/{instance_id}",
    summary="Set an instance's constraints",
    responses={**CONSTRAINTS_WRITE, **E404},
)
async def put_instance(
    instance_id: InstanceId, body: InstanceIn, request: Request, identity: Caller
) -> dict[str, Any]:
    """The instance, if the VIM knows it, must be the project's (another's answers 404);
    its group, if it has constraints, too."""
    _same(body.instance_id, instance_id, "instance_id")
    m = maintenance_of(request)
    server = service_of(request).servers().get(instance_id)
    if server is not None and not identity.can_see(server.project_id):
        raise RequestError(404, f"no instance {instance_id}", "instance_id")
    stored = await _stored_instance(m, instance_id)
    # The admin's constraints for a known instance are its owner's unless it says.
    owner = stored.project_id if stored is not None else None
    if owner is None and server is not None:
        owner = server.project_id
    project = _owner(identity, body.project_id, owner, "instance_id")
    if server is not None and server.project_id != project:
        raise RequestError(400, f"the instance is project {server.project_id}'s", "project_id")
    if body.group_id is not None:
        group = await _stored_group(m, body.group_id)
        if group is not None and group.project_id != project:
            raise RequestError(400, f"no instance group {body.group_id} of {project}", "group_id")
    given = body.model_dump(exclude={"instance_id", "project_id"})
    instance = InstanceConstraints(instance_id=instance_id, project_id=project, **given)
    return instance_view(await m.put_instance(instance))


@router.get(
    "/instance/{instance_id}",
    summary="Show an instance's constraints",
    responses=E404,
)
async def get_instance(
    instance_id: InstanceId, request: Request, identity: Caller
) -> dict[str, Any]:
    return instance_view(await _instance(maintenance_of(request), identity, instance_id))


@router.delete(
    "/instance/{instance_id}",
    status_code=204,
    response_class=Response,
    summary="Forget an instance's constraints",
    responses=E404,
)
async def delete_instance(instance_id: InstanceId, request: Request, identity: Caller) -> Response:
    m = maintenance_of(request)
    await _instance(m, identity, instance_id)
    await m.delete_instance(instance_id)
    return Response(status_code=204)
