"""The bed's processes: what runs, with which command and environment, and starting one
so that it outlives the command that started it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from opendoctor.lab.openstack.spec import BedSpec

# The WSGI applications: module, and the variable that points it at its configuration.
WSGI = {
    "keystone": ("keystone.wsgi.api:application", {"OS_KEYSTONE_CONFIG_DIR": "keystone"}),
    "placement": ("placement.wsgi.api:application", {"OS_PLACEMENT_CONFIG_DIR": "placement"}),
    "glance": ("glance.wsgi.api:application", {"OS_GLANCE_CONFIG_DIR": "glance"}),
    "neutron": ("neutron.wsgi.api:application", {"OS_NEUTRON_CONFIG_DIR": "neutron"}),
    "nova": ("nova.wsgi.osapi_compute:application", {"OS_NOVA_CONFIG_DIR": "nova"}),
}
# Files beside the directory, where one is not what the application reads by default.
WSGI_FILES = {
    "neutron": {"OS_NEUTRON_CONFIG_FILES": "neutron.conf"},
    # Nova's WSGI app takes its paste pipeline from the first file. Its eventlet monkey
    # patching, half done under gunicorn's threads, stalls the worker until gunicorn
    # aborts it: the API runs on native threads (as under uwsgi or mod_wsgi).
    "nova": {
        "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf",
        "OS_NOVA_DISABLE_EVENTLET_PATCHING": "1",
    },
}

# gunicorn reads this file before it loads the application. Nova and Neutron parse
# sys.argv as their own options (uwsgi hands them --pyargv), so gunicorn's are removed
# first; one worker with threads: the box has two cores and ten services.
_GUNICORN = """\
import sys

sys.argv[1:] = []
wsgi_app = {app!r}
bind = {bind!r}
workers = 1
worker_class = "gthread"
threads = 4
timeout = 180
graceful_timeout = 5
"""
# Neutron's port listing reads a relationship (Port.port_forwardings) that SQLAlchemy
# adds when it configures its mappers, which it otherwise does at the first query: a
# first request that lists ports (Nova's, when it moves a server) fails with a 500.
_CONFIGURE_MAPPERS = """

def post_worker_init(worker):
    import sqlalchemy.orm

    sqlalchemy.orm.configure_mappers()
"""


@dataclass(slots=True)
class Service:
    name: str  # keystone, nova-api, nova-compute-compute1, ...
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # an API's root (what `status` asks)
    host: str = ""  # a nova-compute's host


def plan(spec: BedSpec, ports: dict[str, int]) -> list[Service]:
    """Every process of the bed, in the order they start."""
    services = [_api(spec, name, ports[name]) for name in WSGI]
    nova = ["--config-file", str(spec.etc / "nova" / "nova.conf")]
    for name in ("nova-conductor", "nova-scheduler"):
        services.append(Service(name, [spec.bin(name), *nova]))
    for host in spec.hosts:
        own = ["--config-file", str(spec.etc / "nova" / f"{host}.conf")]
        services.append(
            Service(f"nova-compute-{host}", [spec.bin("nova-compute"), *nova, *own], host=host)
        )
    return services


def _api(spec: BedSpec, name: str, port: int) -> Service:
    app, dirs = WSGI[name]
    config = spec.etc / name / "gunicorn.conf.py"
    bind = f"{spec.address}:{port}"
    hooks = _CONFIGURE_MAPPERS if name == "neutron" else ""
    config.write_text(_GUNICORN.format(app=app, bind=bind) + hooks)
    env = {var: str(spec.etc / sub) for var, sub in dirs.items()} | WSGI_FILES.get(name, {})
    label = "nova-api" if name == "nova" else name
    return Service(label, [spec.bin("gunicorn"), "-c", str(config)], env, f"http://{bind}")


def spawn(spec: BedSpec, service: Service) -> int:
    """Start a service in a session of its own (it outlives us; its group is killed
    whole); its output goes to `log/<name>.log`. Returns its pid."""
    spec.logs.mkdir(parents=True, exist_ok=True)
    log = spec.logs / f"{service.name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            service.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(service.env),
            start_new_session=True,
            cwd=spec.directory,
        )
    return proc.pid


def _env(extra: dict[str, str]) -> dict[str, str]:
    # The bed's tools come from its venv; ours must not leak into their imports.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | extra


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
