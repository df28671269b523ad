"""`api.auth_mode = "keystone"` against the bed's real Keystone: a caller's token is
validated there, a bad one is refused, monitors may report with a Keystone token of
the right role, and opendoctor puts itself in the catalog."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openstack.connection import Connection

from opendoctor.lab.openstack import bed
from opendoctor.lab.openstack.spec import BedSpec
from tests.live import live_api

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


def admin_auth(spec: BedSpec) -> dict[str, Any]:
    clouds = json.loads((Path(spec.directory) / "clouds.yaml").read_text())
    auth: dict[str, Any] = clouds["clouds"][bed.CLOUD]["auth"]
    return auth


@pytest.fixture
def api(openstack_bed: BedSpec, conn: Connection, tmp_path: Path) -> Iterator[str]:
    # Each service registers at start where nothing is registered: begin with nothing.
    for service in list(conn.identity.services()):
        if service.type in ("alarming", "fault-management"):
            conn.identity.delete_service(service)
    auth = admin_auth(openstack_bed)
    keystone = {
        "auth_url": auth["auth_url"],
        "username": auth["username"],
        "password": auth["password"],
        "project": auth["project_name"],
        "region": "RegionOne",
    }
    with live_api(tmp_path, api={"auth_mode": "keystone", "keystone": keystone}) as url:
        yield url


def test_a_keystone_token_is_who_the_caller_is(api: str, conn: Connection) -> None:
    token = conn.session.get_token()
    with httpx.Client(base_url=api) as client:
        resp = client.get("/v2/alarms", headers={"X-Auth-Token": token})
        assert resp.status_code == 200, resp.text
        # Identity headers from outside count for nothing in this mode.
        resp = client.get("/v2/alarms", headers={"X-Project-Id": "admin", "X-Roles": "admin"})
        assert resp.status_code == 401
        resp = client.get("/v2/alarms", headers={"X-Auth-Token": "gAAAAAnot-a-token"})
        assert resp.status_code == 401
        assert resp.json()["error"]["errors"][0]["field"] == "X-Auth-Token"
        # The admin reports events with the same token (its role is a monitor role).
        event = {"type": "compute.host.down", "details": {"hostname": "compute1", "status": "down"}}
        resp = client.put("/events", json=[event], headers={"X-Auth-Token": token})
        assert resp.status_code == 202, resp.text


def test_opendoctor_is_in_the_catalog(api: str, conn: Connection) -> None:
    endpoints = {
        service.type: [e.url for e in conn.identity.endpoints(service_id=service.id)]
        for service in conn.identity.services()
    }
    assert endpoints.get("alarming") == [api]
    assert endpoints.get("fault-management") == [api]
