"""`/v1/fence-devices`: admin only, bounded, the address through the fencing egress
policy, and the password never shown again; a refused request changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline.conftest import ADMIN, Running, lab_vim, serving, settings_for

BMC: dict[str, Any] = {
    "driver": "redfish",
    "address": "https://10.9.0.11/redfish/v1",
    "system": "1",
    "username": "fencer",
    "password": "s3cret-bmc-pass",
}
MEMBER = {"X-Project-Id": "project-a", "X-User-Id": "vnfm-a", "X-Roles": "member"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Running]:
    fencing = {"egress_allow": ["10.9.0.0/16"]}
    async with serving(settings_for(tmp_path, recovery={"fencing": fencing}), lab_vim()) as r:
        yield r


async def listed(r: Running) -> list[dict[str, Any]]:
    resp = await r.client.get("/v1/fence-devices", headers=ADMIN)
    assert resp.status_code == 200
    result: list[dict[str, Any]] = resp.json()
    return result


async def test_register_show_replace_and_forget_a_device(api: Running) -> None:
    resp = await api.client.put("/v1/fence-devices/compute1", json=BMC, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    assert resp.json()["password"] == "******"
    shown = (await api.client.get("/v1/fence-devices/compute1", headers=ADMIN)).json()
    assert {k: shown[k] for k in ("host", "driver", "address", "username")} == {
        "host": "compute1", "driver": "redfish", "address": BMC["address"], "username": "fencer"
    }  # fmt: skip
    ipmi = {"driver": "ipmi", "address": "10.9.0.11:623", "username": "admin", "password": "x"}
    resp = await api.client.put("/v1/fence-devices/compute1", json=ipmi, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    assert [(d["host"], d["driver"]) for d in await listed(api)] == [("compute1", "ipmi")]
    device = await api.service.fence_devices.device("compute1")
    assert device is not None and device.password.get_secret_value() == "x"
    resp = await api.client.delete("/v1/fence-devices/compute1", headers=ADMIN)
    assert resp.status_code == 204
    assert await listed(api) == []
    resp = await api.client.delete("/v1/fence-devices/compute1", headers=ADMIN)
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"address": "https://127.0.0.1/redfish/v1"}, "address", "loopback"),
        ({"address": "https://169.254.169.254/redfish/v1"}, "address", "link-local"),
        ({"address": "ftp://10.9.0.11/"}, "address", "Redfish service root"),
        ({"driver": "snmp"}, "driver", "redfish"),
        ({"driver": "ipmi", "address": "10.9.0.11:623", "system": "1"}, "system", "redfish"),
        ({"password": ""}, "password", "at least 1"),
        ({"username": "u" * 300}, "username", "at most 255"),
        ({"extra": 1}, "extra", "not permitted"),
    ],
)
async def test_a_bad_device_is_refused_naming_the_field_and_changes_nothing(
    api: Running, change: dict[str, Any], field: str, says: str
) -> None:
    body = {k: v for k, v in {**BMC, **change}.items() if v is not None}
    resp = await api.client.put("/v1/fence-devices/compute1", json=body, headers=ADMIN)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert field in {e["field"] for e in error["errors"]} | {error["errors"][0]["field"]}
    assert says.lower() in resp.text.lower()
    assert BMC["password"] not in resp.text
    assert await listed(api) == []


async def test_only_the_admin_sees_or_changes_devices(api: Running) -> None:
    resp = await api.client.put("/v1/fence-devices/compute1", json=BMC, headers=MEMBER)
    assert resp.status_code == 403
    assert await listed(api) == []
    await api.client.put("/v1/fence-devices/compute1", json=BMC, headers=ADMIN)
    for method in ("GET", "DELETE"):
        resp = await api.client.request(method, "/v1/fence-devices/compute1", headers=MEMBER)
        assert resp.status_code == 403
    assert (await api.client.get("/v1/fence-devices", headers=MEMBER)).status_code == 403
    assert len(await listed(api)) == 1
