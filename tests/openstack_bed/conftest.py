"""The OpenStack test bed for the `openstack` tests: one per session, brought up by the
first test that needs it (or a running one reused, and then left running), taken down
at the end of the session if the session brought it up.

It needs MariaDB, RabbitMQ (with `rabbitmqctl`) and the package index the first time
(the bed's venv is kept in ~/.cache/opendoctor/openstack): without them the tests are
skipped on a developer's machine and fail in CI (`tests/servers.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import openstack
import pytest
from openstack.compute.v2.server import Server
from openstack.compute.v2.service import Service
from openstack.connection import Connection
from openstack.exceptions import BadRequestException
from openstack.identity.v3._proxy import Proxy as IdentityV3

from opendoctor.infra.procs import pid_alive
from opendoctor.lab.openstack import bed, catalog
from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.lab.openstack.state import kill_compute, read_state, start_compute
from tests.live import live_api
from tests.servers import need

# Nova's microversion for forced_down (2.53: services by id) and the host of a server.
COMPUTE_MICROVERSION = "2.80"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _missing(spec: BedSpec) -> str | None:
    db = urlsplit(spec.database)
    if not _answers(db.hostname or "127.0.0.1", db.port or 3306):
        return f"MariaDB is not reachable at {db.hostname}:{db.port or 3306}"
    rabbit = urlsplit(f"amqp://{spec.rabbit}")
    if not _answers(rabbit.hostname or "127.0.0.1", rabbit.port or 5672):
        return f"RabbitMQ is not reachable at {rabbit.hostname}:{rabbit.port or 5672}"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (the bed makes a vhost of its own with it)"
    return None


@pytest.fixture(scope="session")
def openstack_bed() -> Iterator[BedSpec]:
    spec = BedSpec()
    problem = _missing(spec)
    if problem is not None:
        need(f"the OpenStack test bed cannot start: {problem}")
    if bed.running(spec) is not None:
        yield spec  # someone's `opendoctor openstack-lab up`: theirs to take down
        return
    try:
        asyncio.run(bed.up(spec))
    except Exception:
        asyncio.run(bed.down(spec))
        raise
    try:
        yield spec
    finally:
        asyncio.run(bed.down(spec))


@pytest.fixture
def conn(openstack_bed: BedSpec) -> Iterator[Connection]:
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(Path(openstack_bed.directory) / "clouds.yaml")
    connection = openstack.connect(cloud=bed.CLOUD)
    connection.compute.default_microversion = COMPUTE_MICROVERSION
    try:
        yield connection
    finally:
        connection.close()


def admin_auth(spec: BedSpec) -> dict[str, Any]:
    """The `auth` of the bed's admin in its clouds.yaml (auth_url, username, password,
    project_name, the domains)."""
    clouds = json.loads((Path(spec.directory) / "clouds.yaml").read_text())
    auth: dict[str, Any] = clouds["clouds"][bed.CLOUD]["auth"]
    return auth


def identity(conn: Connection) -> IdentityV3:
    """`conn.identity` as what the bed's is: Keystone v3 (typed as v2 or v3)."""
    return cast(IdentityV3, conn.identity)


# Ours.
CATALOG_TYPES = ("alarming", "fault-management", "instance-ha", "workflowv2", "maintenance")


def _unregister(conn: Connection) -> None:
    for service in list(identity(conn).services()):
        if service.type in CATALOG_TYPES:
            identity(conn).delete_service(service)


@pytest.fixture
def keystone_api(openstack_bed: BedSpec, conn: Connection, tmp_path: Path) -> Iterator[str]:
    """The URL of opendoctor with `api.auth_mode = "keystone"` on the bed's Keystone, the
    bed's admin as its service user: registered in the catalog (as `alarming` and
    `fault-management`, region RegionOne) by the time the URL is given."""
    # Each service registers at start where nothing is registered: begin with nothing,
    # and leave nothing that points at a port no one listens on any more.
    _unregister(conn)
    auth = admin_auth(openstack_bed)
    keystone = {
        "auth_url": auth["auth_url"],
        "username": auth["username"],
        "password": auth["password"],
        "project": auth["project_name"],
        "region": "RegionOne",
    }
    try:
        with live_api(tmp_path, api={"auth_mode": "keystone", "keystone": keystone}) as url:
            yield url
    finally:
        _unregister(conn)


def computes(conn: Connection) -> dict[str, Service]:
    return {s.host: s for s in conn.compute.services(binary="nova-compute")}


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def restart_compute(spec: BedSpec, conn: Connection, host: str) -> None:
    """Power-cycle a host's nova-compute, as a repaired host's would start again, and
    return once the new one has reported in. Its first report comes after its start-up
    work: a server scheduled to it before then may be found "building" by that work and
    set to ERROR, as an interrupted build would be."""
    killed = kill_compute(spec, host)
    if killed is not None:  # gone before it is started again, or it would count as running
        wait_for(lambda: not pid_alive(killed), 10, f"the nova-compute of {host} gone")
    # Nothing reports for the host now: the next change of updated_at is the new one's.
    last = computes(conn)[host].updated_at
    start_compute(spec, host)
    wait_for(
        lambda: computes(conn)[host].updated_at != last, 120, f"the new nova-compute of {host}"
    )


def force_up(spec: BedSpec, conn: Connection, service: Service) -> None:
    """Lift a forced-down host. Nova (2024.2 on) refuses while evacuations from it are
    `done` but not closed, which its nova-compute does when it starts: restart it, as a
    repaired host's would be, and ask again until Nova agrees."""
    try:
        conn.compute.update_service_forced_down(service, forced=False)
        return
    except BadRequestException:
        restart_compute(spec, conn, service.host)

    def accepted() -> bool:
        try:
            conn.compute.update_service_forced_down(service, forced=False)
        except BadRequestException:
            return False
        return True

    wait_for(accepted, 120, f"Nova to let {service.host} up")


@pytest.fixture(autouse=True)
def all_computes_up(openstack_bed: BedSpec, conn: Connection) -> None:
    """Each test starts with every compute host in service, whatever came before (a
    test that failed half way, a reused bed someone forced a host down in)."""
    for entry in (read_state(openstack_bed) or {}).get("processes", []):
        if entry.get("host") and not pid_alive(entry["pid"]):  # a host left powered off
            restart_compute(openstack_bed, conn, entry["host"])
    for service in computes(conn).values():
        if service.is_forced_down:
            force_up(openstack_bed, conn, service)
    wait_for(lambda: all(s.state == "up" for s in computes(conn).values()), 120, "compute hosts up")


@pytest.fixture
def server(openstack_bed: BedSpec, conn: Connection) -> Iterator[Server]:
    flavor = conn.compute.find_flavor(catalog.FLAVOR, ignore_missing=False)
    image = conn.image.find_image(catalog.IMAGE, ignore_missing=False)
    # No network: the bed's Neutron wires nothing (its API answers Nova's questions).
    created = conn.compute.create_server(
        name="od-test", flavor_id=flavor.id, image_id=image.id, networks="none"
    )
    try:
        yield conn.compute.wait_for_server(created, status="ACTIVE", wait=120, interval=0.5)
    finally:
        conn.compute.delete_server(created, force=True)
        conn.compute.wait_for_delete(created, wait=60)
        for service in computes(conn).values():
            if service.is_forced_down:
                force_up(openstack_bed, conn, service)
