"""`api.auth_mode = "keystone"` against the bed's real Keystone: a caller's token is
validated there, a bad one is refused, monitors may report with a Keystone token of
the right role, and opendoctor puts itself in the catalog."""

from __future__ import annotations

import httpx
import pytest
from openstack.connection import Connection

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def all_computes_up() -> None:
    """Replaces the bed's: these tests need no compute host, and leave them as whoever
    shares the bed set them."""


def test_a_keystone_token_is_who_the_caller_is(keystone_api: str, conn: Connection) -> None:
    token = conn.session.get_token()
    with httpx.Client(base_url=keystone_api) as client:
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


def test_opendoctor_is_in_the_catalog(keystone_api: str, conn: Connection) -> None:
    endpoints = {
        service.type: [e.url for e in conn.identity.endpoints(service_id=service.id)]
        for service in conn.identity.services()
    }
    assert endpoints.get("alarming") == [keystone_api]
    assert endpoints.get("fault-management") == [keystone_api]
