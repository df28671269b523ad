"""The OpenStack test bed for the `openstack` tests: one per session, brought up by the
first test that needs it (or a running one reused, and then left running), taken down
at the end of the session if the session brought it up.

It needs MariaDB, RabbitMQ (with `rabbitmqctl`) and the package index the first time
(the bed's venv is kept in ~/.cache/opendoctor/openstack): without them the tests are
skipped on a developer's machine and fail in CI (`tests/servers.py`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import openstack
import pytest
from openstack.connection import Connection

from opendoctor.lab.openstack import bed
from opendoctor.lab.openstack.spec import BedSpec
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
