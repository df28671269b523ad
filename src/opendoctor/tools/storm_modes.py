"""The modes, options and sizes of `opendoctor bench storm` (see `bench_storm`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.storm_intake import IntakeOptions

PROJECTS = ["project-a", "project-b"]
IP_PREFIX = "127.70"
SINGLE_VMS = 50  # VMs on the host that fails alone after the storm
TARGET_P99 = 0.100  # seconds: the 50-VM host fault's T01→T09 p99 to stay under
RESEND_AFTER = 0.1  # seconds before an event the service refused (5xx) is sent again
RESEND_FOR = 60.0  # seconds of refusals before the bench gives up
DEFAULT_PG = os.environ.get("OPENDOCTOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_AMQP = os.environ.get("OPENDOCTOR_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
# opendoctor.app.intake.EVENTS_TOPIC and remote.NOTIFICATIONS_TOPIC (not imported: they pull
# in the service)
TOPICS = ("events", "notifications")


class Unavailable(RuntimeError):
    """PostgreSQL or RabbitMQ, which a mode needs, cannot be reached."""


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    title: str
    backends: bool  # runs on PostgreSQL and RabbitMQ
    replicas: int | None = None  # None: one service process; N: a cluster, N per role


MODES: dict[str, Mode] = {
    "embedded": Mode("embedded", "SQLite, in-process bus", backends=False),
    "scaled": Mode("scaled", "PostgreSQL, RabbitMQ, one process", backends=True),
    "split": Mode("split", "each role its own process", backends=True, replicas=1),
    "split-2": Mode("split-2", "2 processes per role", backends=True, replicas=2),
}
BASELINE = "embedded"


@dataclass(slots=True)
class Options:
    hosts: int = 100
    vms_per_host: int = 100
    runs: int = 10
    amqp_actions: bool = False  # owners subscribe over AMQP instead of HTTP callbacks
    partitions: int = 8  # bus partitions in scaled mode (the service's default)
    pg_url: str = DEFAULT_PG  # a database the bench may create databases from
    amqp_url: str = DEFAULT_AMQP
    ip_prefix: str = IP_PREFIX
    storm_timeout: float | None = None  # seconds for every notification (None: by size)
    workdir: Path | None = None  # None: a temporary directory, removed afterwards
    kill_restart: str | None = None  # a role whose replica 0 is killed and restarted
    window: float = 15.0  # seconds of each throughput window around the kill and restart
    # Events reported while the storm is delivered, and against the idle service before.
    intake: IntakeOptions = field(default_factory=IntakeOptions)
    # The storm's callbacks again from a bare aiohttp client (HTTP owners only).
    floor: bool = True

    @property
    def storm_vms(self) -> int:
        return self.hosts * self.vms_per_host


def check_size(hosts: int, vms_per_host: int) -> None:
    """Raise ValueError unless a lab holds that many hosts and VMs (and the 50-VM host)."""
    spec = LabSpec(hosts=hosts + 1, vms=0, ip_prefix=IP_PREFIX)
    try:
        spec.vm_address(hosts * vms_per_host + SINGLE_VMS)
    except ValueError as exc:
        raise ValueError(f"{hosts} x {vms_per_host} VMs do not fit in one lab: {exc}") from exc
