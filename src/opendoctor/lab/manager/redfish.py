"""The lab's baseboard management controllers, as one Redfish service (`/redfish/v1`).

A real BMC is a small computer beside the host, on its own power and network: it
answers while the host is off, and it turns the host's power off and on. Here every lab
host is a `ComputerSystem` of one service, as a chassis manager or an emulator serves
many systems: its `PowerState` is whether the host's process runs, and its
`ComputerSystem.Reset` action kills or starts that process, as `fail-host` and
`restore-host` do. Fencing (power the failed host off, confirm it is off) talks to it
with a real Redfish client.

HTTP Basic authentication, with the one account of `BmcAccount`: the password comes from
the manager's environment or is made at start and kept in `DIR/bmc.json` (mode 600),
never on a command line, in `lab.json` or in a log. Errors are Redfish's own shape.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from opendoctor.lab.manager.records import LabError
from opendoctor.lab.manager.state import Lab
from opendoctor.lab.manager.webutil import json_response, lab_of

ROOT = "/redfish/v1"
BMC_FILE = "bmc.json"
BMC_PASSWORD_ENV = "OPENDOCTOR_LAB_BMC_PASSWORD"
# What Reset accepts: off at once (fencing), on, both in turn, and the button's toggle.
RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "PushPowerButton")


@dataclass(frozen=True, slots=True)
class BmcAccount:
    username: str
    password: str

    @classmethod
    def load_or_make(cls, state_dir: Path | None) -> BmcAccount:
        """The environment's password, the one kept in `DIR/bmc.json`, or a new one kept
        there (so that a restarted manager keeps its fence devices' credentials)."""
        given = os.environ.get(BMC_PASSWORD_ENV)
        if given:
            return cls("admin", given)
        path = state_dir / BMC_FILE if state_dir is not None else None
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            return cls(str(data["username"]), str(data["password"]))
        # 20 characters (120 bits): the most an IPMI password holds (the IPMI BMCs share
        # the account, and ipmitool refuses a longer one).
        account = cls("admin", secrets.token_urlsafe(15))
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"username": account.username, "password": account.password}, fh)
        return account

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared whole, in constant time: no early answer tells which was wrong.
        ok_user = hmac.compare_digest(user.encode(), self.username.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password


ACCOUNT_KEY = web.AppKey("bmc_account", BmcAccount)


def _error(status: int, message: str, message_id: str) -> web.Response:
    body = {
        "error": {
            "code": "Base.1.8.GeneralError",
            "message": message,
            "@Message.ExtendedInfo": [{"MessageId": f"Base.1.8.{message_id}", "Message": message}],
        }
    }
    return json_response(body, status)


@web.middleware
async def redfish_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every Redfish resource but the service root wants the account (as DSP0266 says)."""
    protected = request.path.startswith(ROOT) and request.path.rstrip("/") != ROOT
    if protected and not request.app[ACCOUNT_KEY].allows(request.headers.get("Authorization")):
        refused = _error(401, "The BMC's credentials are required.", "NoValidSession")
        refused.headers["WWW-Authenticate"] = 'Basic realm="opendoctor lab BMC"'
        return refused
    response: web.StreamResponse = await handler(request)
    return response


def _system(lab: Lab, name: str) -> dict[str, Any]:
    host = lab.hosts.get(name)
    if host is None:
        raise web.HTTPNotFound()
    path = f"{ROOT}/Systems/{name}"
    return {
        "@odata.id": path,
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": name,
        "Name": name,
        "SystemType": "Physical",
        "PowerState": "On" if host.alive else "Off",
        "Status": {"State": "Enabled" if host.alive else "StandbyOffline", "Health": "OK"},
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": f"{path}/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": list(RESET_TYPES),
            }
        },
    }


async def service_root(request: web.Request) -> web.Response:
    return json_response(
        {
            "@odata.id": f"{ROOT}/",
            "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
            "Id": "RootService",
            "Name": "opendoctor lab BMCs",
            "RedfishVersion": "1.8.0",
            "UUID": "6f0d2f34-6f9c-4d0b-9e3a-0c1a5e1d0b01",
            "Systems": {"@odata.id": f"{ROOT}/Systems"},
        }
    )


async def systems(request: web.Request) -> web.Response:
    members = [{"@odata.id": f"{ROOT}/Systems/{name}"} for name in lab_of(request).hosts]
    return json_response(
        {
            "@odata.id": f"{ROOT}/Systems",
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection",
            "Members": members,
            "Members@odata.count": len(members),
        }
    )


async def system(request: web.Request) -> web.Response:
    try:
        return json_response(_system(lab_of(request), request.match_info["name"]))
    except web.HTTPNotFound:
        return _error(404, "No such system.", "ResourceNotFound")


async def reset(request: web.Request) -> web.Response:
    lab, name = lab_of(request), request.match_info["name"]
    if name not in lab.hosts:
        return _error(404, "No such system.", "ResourceNotFound")
    try:
        body = await request.json()
    except ValueError:
        body = None
    kind = body.get("ResetType") if isinstance(body, dict) else None
    if kind not in RESET_TYPES:
        allowed = ", ".join(RESET_TYPES)
        return _error(400, f"ResetType must be one of {allowed}.", "ActionParameterNotSupported")
    host = lab.hosts[name]
    was_on = host.alive
    off = kind in ("ForceOff", "GracefulShutdown", "ForceRestart") or (
        kind == "PushPowerButton" and was_on
    )
    on = kind in ("On", "ForceRestart") or (kind == "PushPowerButton" and not was_on)
    try:
        if off and host.alive:
            await lab.fail_host(name, kind="bmc-power-off")
        if on and not host.alive:
            await lab.restore_host(name)
    except LabError as exc:
        return _error(exc.status if exc.status >= 400 else 500, exc.message, "GeneralError")
    return web.Response(status=204)


def redfish_routes() -> list[web.RouteDef]:
    return [
        web.get(ROOT, service_root),
        web.get(f"{ROOT}/", service_root),
        web.get(f"{ROOT}/Systems", systems),
        web.get(f"{ROOT}/Systems/{{name}}", system),
        web.post(f"{ROOT}/Systems/{{name}}/Actions/ComputerSystem.Reset", reset),
    ]
