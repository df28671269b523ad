"""`/v1/fence-devices`: the BMCs of hosts, registered by an operator (admin only).

A device registered here counts beside those of the configuration (which win for the
hosts they name). Its password goes in and never comes out: it is sealed at rest, and
every answer shows `"password": "******"`. Its address must pass the fencing egress
policy (`recovery.fencing.egress_allow`) at registration, and again each time it is
called: the name may resolve elsewhere by then.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from opendoctor.api.auth import current_identity
from opendoctor.api.errors import validation_errors
from opendoctor.api.native import Marker, require_admin, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.model import iso
from opendoctor.core.recovery_settings import FenceDeviceSettings
from opendoctor.recovery.fencing import egress_problem
from opendoctor.store.fence_devices import FenceDeviceStore, StoredDevice

router = APIRouter(prefix="/v1/fence-devices", tags=["fencing"])

HIDDEN = "******"
HostName = Annotated[
    str, Path(min_length=1, max_length=255, pattern=r"^[^\s/:]+$", description="the host's name")
]


class FenceDeviceIn(BaseModel):
    """A host's BMC, as `recovery.fencing.devices` describes one."""

    model_config = ConfigDict(extra="forbid")

    driver: str = Field("redfish", max_length=16, description="redfish or ipmi")
    address: str = Field(..., max_length=2048)
    system: str | None = Field(None, max_length=255)
    username: str = Field(..., min_length=1, max_length=255)
    password: str = Field(..., min_length=1, max_length=255)
    verify_tls: bool = True


def _shown(device: StoredDevice) -> dict[str, Any]:
    body = asdict(device)
    body["password"] = HIDDEN
    body["created_at"], body["updated_at"] = iso(device.created_at), iso(device.updated_at)
    return body


def _store(request: Request) -> FenceDeviceStore:
    store: FenceDeviceStore | None = service_of(request).fence_devices
    if store is None:
        raise RequestError(503, "this process does not keep fence devices (no api role)")
    return store


def _admin(identity: Identity = Depends(current_identity)) -> Identity:
    require_admin(identity)
    return identity


@router.get("", summary="List registered fence devices (passwords hidden)")
async def list_devices(
    request: Request,
    identity: Annotated[Identity, Depends(_admin)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    marker: Marker = None,
) -> list[dict[str, Any]]:
    return [_shown(d) for d in await _store(request).all_shown(limit, marker)]


@router.get("/{host}", summary="Show a host's registered fence device (password hidden)")
async def show_device(
    request: Request, host: HostName, identity: Annotated[Identity, Depends(_admin)]
) -> dict[str, Any]:
    found = await _store(request).shown(host)
    if found is None:
        raise RequestError(404, f"no fence device is registered for {host}", "host")
    return _shown(found)


@router.put(
    "/{host}",
    summary="Register or replace a host's fence device",
    responses={200: {"description": "replaced"}, 201: {"description": "registered"}},
)
async def put_device(
    request: Request,
    response: Response,
    host: HostName,
    body: FenceDeviceIn,
    identity: Annotated[Identity, Depends(_admin)],
) -> dict[str, Any]:
    try:
        device = FenceDeviceSettings(
            driver=body.driver,
            address=body.address,
            system=body.system,
            username=body.username,
            password=SecretStr(body.password),
            verify_tls=body.verify_tls,
        )
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        raise RequestError(400, f"invalid fence device: {message}", errors[0]["field"]) from None
    settings = service_of(request).settings.recovery.fencing
    problem = await egress_problem(device, settings.egress())
    if problem is not None:
        raise RequestError(400, f"the address may not be called: {problem}", "address")
    stored, created = await _store(request).put(host, device)
    response.status_code = 201 if created else 200
    return _shown(stored)


@router.delete("/{host}", status_code=204, summary="Forget a host's registered fence device")
async def delete_device(
    request: Request, host: HostName, identity: Annotated[Identity, Depends(_admin)]
) -> Response:
    if not await _store(request).delete(host):
        raise RequestError(404, f"no fence device is registered for {host}", "host")
    return Response(status_code=204)
