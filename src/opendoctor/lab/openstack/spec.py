"""What a test bed is made of: where it lives, what it talks to, its ports and secrets."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

# The compute hosts of `opendoctor lab up`: one nova-compute each, named alike, so that
# a lab host's power-off can take its nova-compute down with it.
HOSTS = ("compute1", "compute2", "compute3")
# One database per service (nova: its API database, cell0 and the one cell).
DATABASES = ("keystone", "placement", "glance", "neutron", "nova_api", "nova_cell0", "nova")
# The WSGI APIs, each a gunicorn on a loopback port of its own.
APIS = ("keystone", "placement", "glance", "neutron", "nova")
SERVICE_USERS = ("nova", "placement", "glance", "neutron")
REGION = "RegionOne"
ADMIN = "admin"
SECRETS_FILE = "secrets.json"


def default_home() -> Path:
    """The bed's virtualenv: a cache, kept across `down` so that the next `up` is fast."""
    given = os.environ.get("OPENDOCTOR_OPENSTACK_HOME")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opendoctor" / "openstack"


def default_state_dir() -> Path:
    """Configs, keys, logs and `openstack.json` of the running bed (removed by `down`)."""
    given = os.environ.get("OPENDOCTOR_OPENSTACK_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opendoctor" / "openstack"


@dataclass(frozen=True, slots=True)
class BedSpec:
    home: Path = field(default_factory=default_home)
    directory: Path = field(default_factory=default_state_dir)
    # MariaDB (or MySQL) as an administrator that may create and drop databases.
    database: str = "mysql+pymysql://root@127.0.0.1:3306"
    # RabbitMQ: the bed takes a vhost of its own, so its queues meet no one else's.
    rabbit: str = "guest:guest@127.0.0.1:5672"
    vhost: str = "opendoctor-openstack"
    # Prefixed to the database names, so two beds (or a bed and a project) never share one.
    prefix: str = "od_"
    hosts: tuple[str, ...] = HOSTS
    address: str = "127.0.0.1"
    # The lab's `ip_prefix` (`opendoctor lab up --ip-prefix`, default 127.0): compute N
    # reports the lab's host N address as its `host_ip`, so opendoctor, reading its hosts
    # from Nova, probes the lab host whose power takes that nova-compute down.
    lab_prefix: str = "127.0"

    def __post_init__(self) -> None:
        parts = self.lab_prefix.split(".")
        if len(parts) != 2 or parts[0] != "127" or not parts[1].isdigit() or int(parts[1]) > 255:
            raise ValueError(f"lab_prefix must look like '127.N', got {self.lab_prefix!r}")

    def host_address(self, host: str) -> str:
        """The management address Nova reports for `host`: the lab's host of that name."""
        return f"{self.lab_prefix}.1.{self.hosts.index(host) + 1}"

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def db_url(self, name: str) -> str:
        return f"{self.database}/{self.prefix}{name}?charset=utf8"

    @property
    def transport_url(self) -> str:
        return f"rabbit://{self.rabbit}/{quote(self.vhost, safe='')}"

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    @property
    def logs(self) -> Path:
        return self.directory / "log"


@dataclass(slots=True)
class Secrets:
    """The admin's and the service users' passwords: made at `up`, kept in a file only
    its owner reads, never put on a command line or in a log."""

    admin: str
    services: dict[str, str]

    @classmethod
    def new(cls) -> Secrets:
        return cls(secrets.token_urlsafe(18), {u: secrets.token_urlsafe(18) for u in SERVICE_USERS})

    def save(self, directory: Path) -> None:
        write_private(directory / SECRETS_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Secrets:
        data: dict[str, Any] = json.loads((directory / SECRETS_FILE).read_text())
        return cls(data["admin"], dict(data["services"]))


def write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets: mode 600 from its creation, replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)
