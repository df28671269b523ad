"""The bed is a real OpenStack: Keystone logs the admin in, Nova sees its compute hosts,
boots a server with the fake driver, resets its state and evacuates it. These are the
calls opendoctor's OpenStack driver makes, against the real services."""

from __future__ import annotations

import pytest
from openstack.compute.v2.server import Server
from openstack.connection import Connection

from opendoctor.lab.openstack.spec import HOSTS
from tests.openstack_bed.conftest import computes, wait_for

# The first test waits for the bed to come up (a minute and a half; more on a first
# install): longer than the suite's default timeout.
pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]


def test_keystone_issues_a_fernet_token_for_the_admin(conn: Connection) -> None:
    token = conn.session.get_token()
    # A fernet token is an encrypted blob (a "gAAAAA" prefix), not a UUID: proves the
    # provider, as nothing else a client sees does.
    assert token.startswith("gAAAAA") and len(token) > 100
    user = conn.identity.get_user(conn.current_user_id)
    assert user.name == "admin"
    assert {s.type for s in conn.identity.services()} >= {
        "identity", "compute", "placement", "image", "network",
    }  # fmt: skip


def test_nova_sees_three_compute_hosts_and_forced_down(conn: Connection) -> None:
    services = computes(conn)
    assert sorted(services) == sorted(HOSTS)
    assert all(s.state == "up" and s.status == "enabled" for s in services.values())
    service = services["compute3"]
    try:
        conn.compute.update_service_forced_down(service, forced=True)
        after = computes(conn)["compute3"]
        assert after.is_forced_down and after.state == "down"
    finally:
        conn.compute.update_service_forced_down(service, forced=False)
    assert wait_for(lambda: computes(conn)["compute3"].state == "up", 30, "compute3 up")


def test_server_becomes_active_is_reset_to_error_and_evacuated(
    conn: Connection, server: Server
) -> None:
    source = server.compute_host
    assert server.status == "ACTIVE" and source in HOSTS

    conn.compute.reset_server_state(server, "error")
    assert conn.compute.get_server(server.id).status == "ERROR"

    # Evacuation is for a dead host: Nova refuses it while the host's service is up.
    conn.compute.update_service_forced_down(computes(conn)[source], forced=True)
    conn.compute.evacuate_server(server)

    def moved() -> Server | None:
        now = conn.compute.get_server(server.id)
        return now if now.status == "ACTIVE" and now.compute_host != source else None

    moved_to = wait_for(moved, 120, "the server ACTIVE on another host")
    assert moved_to.compute_host in set(HOSTS) - {source}
