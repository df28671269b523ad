"""Aodh-compatible alarm routes: /v2/alarms (event alarms only)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from opendoctor.api import alarm_query
from opendoctor.api.alarm_query import (
    HISTORY_FIELDS,
    HISTORY_SORT,
    MAX_LIMIT,
    SORT_HELP,
    TIME_OPS,
    list_filter,
    simple_terms,
)
from opendoctor.api.audit import audit_target
from opendoctor.api.auth import current_identity
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.query import parse_sort, simple_query
from opendoctor.notifier.alarm_query import ALARM_SORT, LIST_FIELDS
from opendoctor.notifier.rules import STATES, AlarmBody, to_api

router = APIRouter(tags=["alarms (Aodh)"])
router.include_router(alarm_query.router)  # the queries and capabilities: one Aodh API

Caller = Annotated[Identity, Depends(current_identity)]


Service = alarm_query.Service


@router.post("/v2/alarms", status_code=201, summary="Create an event alarm")
async def create_alarm(
    body: AlarmBody, request: Request, service: Service, identity: Caller
) -> dict[str, Any]:
    alarm = await service.create(body, identity)
    audit_target(request, alarm.alarm_id)
    return to_api(alarm)


@router.get(
    "/v2/alarms",
    summary="List alarms",
    description=(
        "The caller's project's alarms (an admin's: every project's; with the term "
        "all_projects=false, the admin's own project's), newest first unless `sort` says "
        "otherwise, at most `limit` (the next page: `marker` = the last alarm id of this "
        "one). Filter with repeated q.field/q.op/q.value (every term must hold) on "
        + ", ".join(LIST_FIELDS)
        + " (op eq), as Aodh's simple query."
    ),
)
async def list_alarms(
    service: Service,
    identity: Caller,
    q: Annotated[list[tuple[str, str, str]], Depends(simple_terms)],
    sort: Annotated[list[str] | None, Query(description=SORT_HELP + ", ".join(ALARM_SORT))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="most alarms answered")] = 1000,
    marker: Annotated[
        str | None, Query(max_length=36, description="the last alarm id of the page before")
    ] = None,
) -> list[dict[str, Any]]:
    order = parse_sort(sort or [], ALARM_SORT)
    node = list_filter(q, identity)
    return [to_api(a) for a in service.query(identity, node, order, limit, marker, "q.value")]


@router.get("/v2/alarms/{alarm_id}", summary="Show an alarm")
async def get_alarm(alarm_id: str, service: Service, identity: Caller) -> dict[str, Any]:
    return to_api(service.get(alarm_id, identity))


@router.put(
    "/v2/alarms/{alarm_id}",
    summary="Replace an alarm's definition",
    description="Keeps the alarm's id, and its state unless the body sets another than "
    "the one it had; a state set while the alarm's state changed is a 409.",
    responses={409: {"description": "the alarm's state changed meanwhile; nothing changed"}},
)
async def put_alarm(
    alarm_id: str, body: AlarmBody, service: Service, identity: Caller
) -> dict[str, Any]:
    return to_api(await service.update(alarm_id, body, identity))


@router.delete(
    "/v2/alarms/{alarm_id}", status_code=204, response_class=Response, summary="Delete an alarm"
)
async def delete_alarm(alarm_id: str, service: Service, identity: Caller) -> Response:
    await service.delete(alarm_id, identity)
    return Response(status_code=204)


@router.get("/v2/alarms/{alarm_id}/state", summary="Show an alarm's state")
async def get_state(alarm_id: str, service: Service, identity: Caller) -> str:
    return service.get_state(alarm_id, identity)


_STATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "string", "enum": list(STATES)}}},
    }
}


@router.put(
    "/v2/alarms/{alarm_id}/state",
    summary="Set an alarm's state",
    description="The body is a JSON string. Records a state transition; fires no actions.",
    openapi_extra=_STATE_BODY,
)
async def put_state(alarm_id: str, request: Request, service: Service, identity: Caller) -> str:
    # Read by hand: the body is a bare JSON string, and errors must name `state`.
    try:
        state = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise RequestError(400, 'the body must be a JSON string such as "alarm"', "state") from None
    if not isinstance(state, str) or state not in STATES:
        allowed = ", ".join(f'"{s}"' for s in STATES)
        raise RequestError(400, f"state must be one of {allowed}, not {state!r}", "state")
    return await service.set_state(alarm_id, state, identity)


@router.get(
    "/v2/alarms/{alarm_id}/history",
    summary="Show an alarm's history (newest first)",
    description=(
        "Filter with q.field/q.op/q.value on " + ", ".join(HISTORY_FIELDS) + " (op eq; "
        "timestamp: lt, le, gt, ge). The history of a deleted alarm is kept: an admin reads "
        "it here, anyone through POST /v2/query/alarms/history."
    ),
)
async def get_history(
    alarm_id: str,
    service: Service,
    identity: Caller,
    q: Annotated[list[tuple[str, str, str]], Depends(simple_terms)],
    sort: Annotated[
        list[str] | None, Query(description=SORT_HELP + ", ".join(HISTORY_SORT))
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    marker: Annotated[
        str | None, Query(max_length=36, description="the last event id of the page before")
    ] = None,
) -> list[dict[str, Any]]:
    order = parse_sort(sort or [], HISTORY_SORT)
    node = simple_query(q, HISTORY_FIELDS, {"timestamp": TIME_OPS})
    return await service.history(alarm_id, identity, node, order, limit, marker)
