"""Aodh-compatible alarm routes: /v2/alarms (event alarms only)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.auth import current_identity
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.notifier.alarms import FILTER_FIELDS, AlarmService
from opendoctor.notifier.rules import STATES, AlarmBody, to_api

router = APIRouter(tags=["alarms (Aodh)"])

Caller = Annotated[Identity, Depends(current_identity)]


def _service(request: Request) -> AlarmService:
    return cast(AlarmService, request.app.state.alarms)


Service = Annotated[AlarmService, Depends(_service)]


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
        "The caller's project's alarms (an admin's: every project's), newest first, at most "
        "`limit` (the next page: `marker` = the last alarm id of this one). Filter with "
        "repeated q.field/q.op/q.value on " + ", ".join(FILTER_FIELDS) + " (op eq)."
    ),
)
async def list_alarms(
    service: Service,
    identity: Caller,
    q_field: Annotated[list[str] | None, Query(alias="q.field")] = None,
    q_op: Annotated[list[str] | None, Query(alias="q.op")] = None,
    q_value: Annotated[list[str] | None, Query(alias="q.value")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="most alarms answered")] = 1000,
    marker: Annotated[
        str | None, Query(max_length=36, description="the last alarm id of the page before")
    ] = None,
) -> list[dict[str, Any]]:
    fields, values = q_field or [], q_value or []
    ops = q_op or ["eq"] * len(fields)
    if not len(fields) == len(ops) == len(values):
        raise RequestError(
            400, "q.field, q.op and q.value must be repeated the same number of times", "q"
        )
    filters = list(zip(fields, ops, values, strict=True))
    return [to_api(a) for a in service.list(identity, filters, limit, marker)]


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


@router.get("/v2/alarms/{alarm_id}/history", summary="Show an alarm's history (newest first)")
async def get_history(
    alarm_id: str,
    service: Service,
    identity: Caller,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    return await service.history(alarm_id, identity, limit)
