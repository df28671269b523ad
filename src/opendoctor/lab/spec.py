"""What a lab looks like: how many hosts and VMs, which addresses and ports.

The whole 127.0.0.0/8 block is loopback on Linux, so every host and every VM gets
an address of its own and all of them can use the same ports without configuration.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# The X-Auth-Token hosts send to the events URL (kept off command lines).
EVENTS_TOKEN_ENV = "OPENDOCTOR_LAB_EVENTS_TOKEN"
# The OpenStack test bed (its state directory) whose nova-computes live and die with the
# lab's hosts of the same names. Opt-in: the lab's own tests fail hosts by the hundred
# and must not take a bed that merely runs beside them down.
OPENSTACK_DIR_ENV = "OPENDOCTOR_LAB_OPENSTACK_DIR"
VmMode = Literal["process", "inline"]
VM_MODES: tuple[str, ...] = ("process", "inline")

# Addresses per /24: .1 to .254 (leave out the network and broadcast forms).
_PER_OCTET = 254
# Third octets: hosts .1, VMs .2 up to below the VIPs, hosts' second (alt) addresses.
VIP_OCTET = 250
ALT_OCTET = 251

DEFAULT_HOST_VERSION = "1.0"
VERSION_CHARS = 64


def version_problem(value: object) -> str | None:
    """Why `value` cannot be a host's version string, or None if it can."""
    if not isinstance(value, str) or not 0 < len(value) <= VERSION_CHARS:
        return f"must be a string of 1 to {VERSION_CHARS} characters"
    if not value.isprintable():
        return "must be printable (no control characters)"
    return None


# Which of a host's heartbeat paths drop answers (`set-loss`): its address, its alt
# address, or both.
LOSS_PATHS = ("primary", "alt", "both")


def loss_problem(fraction: object, path: object) -> str | None:
    """Why (`fraction`, `path`) is no heartbeat loss to set, or None if it is one."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        return f"'fraction' must be a number, got {fraction!r}"
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        return f"'fraction' must be at least 0 and below 1, got {fraction}"
    if path not in LOSS_PATHS:
        return f"'path' must be one of {', '.join(LOSS_PATHS)}, got {path!r}"
    return None


# Named services of a VM (`services`): names as the guest protocol allows them.
MAX_SERVICES = 32
MAX_SERVICE_NAME = 64
_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def service_name_problem(name: object) -> str | None:
    """Why `name` cannot name a VM's service, or None if it can."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_SERVICE_NAME:
        return f"a service name is a string of 1 to {MAX_SERVICE_NAME} characters"
    if not _SERVICE_CHARS.issuperset(name):
        return f"service name {name!r} may hold only letters, digits and . _ - @"
    return None


def services_problem(services: object) -> str | None:
    """Why `services` (`{name: healthy}`) cannot be a VM's services, or None."""
    if not isinstance(services, dict) or len(services) > MAX_SERVICES:
        return f"must be an object of at most {MAX_SERVICES} services"
    for name, healthy in services.items():
        if (problem := service_name_problem(name)) is not None:
            return problem
        if not isinstance(healthy, bool):
            return f"service {name}: the health flag must be true or false"
    return None


@dataclass(slots=True)
class LabSpec:
    hosts: int = 3
    vms: int = 6
    projects: list[str] = field(default_factory=lambda: ["project-a", "project-b"])
    ip_prefix: str = "127.0"
    heartbeat_port: int = 4100
    control_port: int = 4101
    vm_port: int = 8080
    vm_mode: VmMode = "process"
    api_host: str = "127.0.0.1"
    api_port: int = 0  # 0: the manager picks a free port
    # Where hosts send events about their VMs (Doctor format, `PUT`); None: nowhere yet.
    events_url: str | None = None
    # Never on a command line nor in lab.json: the manager takes it from the environment.
    events_token: str | None = field(default=None, repr=False)
    # Guest heartbeats between each host and its VMs (off for 1,000-VM benchmarks).
    heartbeat: bool = True
    # The OpenStack test bed tied to these hosts' power (`OPENSTACK_DIR_ENV`), if any.
    openstack_dir: str | None = None
    # What each host can run (a server takes its flavor's vcpus and RAM); 0: no limit.
    host_vcpus: int = 0
    host_ram_mb: int = 0
    # What every host runs at start (a host may boot into another: a staged version).
    host_version: str = DEFAULT_HOST_VERSION
    # Named services of every VM the lab boots with (each healthy at first).
    services: list[str] = field(default_factory=list)
    # A server group of this name per project, which the VMs booted for it join.
    server_group: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 1 <= self.hosts <= _PER_OCTET:
            raise ValueError(f"hosts must be between 1 and {_PER_OCTET}, got {self.hosts}")
        if self.vms < 0:
            raise ValueError(f"vms must not be negative, got {self.vms}")
        if self.host_vcpus < 0 or self.host_ram_mb < 0:
            raise ValueError("host_vcpus and host_ram_mb must not be negative (0: no limit)")
        if (problem := version_problem(self.host_version)) is not None:
            raise ValueError(f"host_version {problem}, got {self.host_version!r}")
        if (problem := services_problem(dict.fromkeys(self.services, True))) is not None:
            raise ValueError(f"services: {problem}")
        if len(set(self.services)) != len(self.services):
            raise ValueError("services: each name once")
        if self.server_group is not None and not 0 < len(self.server_group) <= 255:
            raise ValueError("server_group must be a name of 1 to 255 characters")
        if not self.projects or any(not p for p in self.projects):
            raise ValueError("projects must be a non-empty list of non-empty names")
        if self.vm_mode not in VM_MODES:
            raise ValueError(f"vm_mode must be one of {', '.join(VM_MODES)}")
        parts = self.ip_prefix.split(".")
        if len(parts) != 2 or parts[0] != "127" or not parts[1].isdigit() or int(parts[1]) > 255:
            raise ValueError(f"ip_prefix must look like '127.N' (loopback), got {self.ip_prefix!r}")
        for name in ("heartbeat_port", "control_port", "vm_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} must be a port number, got {port}")
        if not 0 <= self.api_port <= 65535:
            raise ValueError(f"api_port must be a port number or 0, got {self.api_port}")
        if self.events_url is not None and not self.events_url.startswith(("http://", "https://")):
            raise ValueError(f"events_url must be an http(s) URL, got {self.events_url!r}")

    def host_name(self, i: int) -> str:
        """Name of the i-th host, counting from 1."""
        return f"compute{i}"

    def host_address(self, i: int) -> str:
        return f"{self.ip_prefix}.1.{i}"

    def host_alt_address(self, i: int) -> str:
        """The i-th host's second heartbeat address (its "storage network" path)."""
        return f"{self.ip_prefix}.{ALT_OCTET}.{i}"

    def vm_address(self, j: int) -> str:
        """Address of the j-th VM, counting from 1.

        The first 254 VMs live in `{prefix}.2.x` as documented; larger labs (the
        1,000-VM benchmarks) continue in `{prefix}.3.x`, `{prefix}.4.x` and so on.
        """
        if j < 1:
            raise ValueError("VM numbers start at 1")
        octet, rest = divmod(j - 1, _PER_OCTET)
        if octet + 2 >= VIP_OCTET:
            raise ValueError(f"too many VMs for one lab: {j}")
        return f"{self.ip_prefix}.{octet + 2}.{rest + 1}"

    def vip_address(self, n: int) -> str:
        """Address of the n-th load-balancer VIP, counting from 1."""
        return f"{self.ip_prefix}.{VIP_OCTET}.{n}"

    def to_dict(self) -> dict[str, Any]:
        """The spec as `lab.json` shows it: whether there is an events token, not which."""
        data = asdict(self)
        data["events_token"] = None
        data["events_token_set"] = self.events_token is not None
        return data

    def environment(self) -> dict[str, str]:
        """What the manager's environment must add to its command line for this spec."""
        env = {EVENTS_TOKEN_ENV: self.events_token} if self.events_token else {}
        if self.openstack_dir:
            env[OPENSTACK_DIR_ENV] = self.openstack_dir
        return env

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("projects", "services"):
            if key in known:
                known[key] = list(known[key])
        return cls(**known)

    def to_args(self) -> list[str]:
        """The manager's command-line options that rebuild this spec."""
        return [
            "--hosts", str(self.hosts),
            "--vms", str(self.vms),
            "--projects", ",".join(self.projects),
            "--ip-prefix", self.ip_prefix,
            "--heartbeat-port", str(self.heartbeat_port),
            "--control-port", str(self.control_port),
            "--vm-port", str(self.vm_port),
            "--vm-mode", self.vm_mode,
            "--api-host", self.api_host,
            "--api-port", str(self.api_port),
            *(["--events-url", self.events_url] if self.events_url else []),
            "--heartbeat" if self.heartbeat else "--no-heartbeat",
            "--host-vcpus", str(self.host_vcpus),
            "--host-ram-mb", str(self.host_ram_mb),
            "--host-version", self.host_version,
            *(["--services", ",".join(self.services)] if self.services else []),
            *(["--server-group", self.server_group] if self.server_group else []),
        ]  # fmt: skip


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    d = LabSpec()
    parser.add_argument("--hosts", type=int, default=d.hosts)
    parser.add_argument("--vms", type=int, default=d.vms)
    parser.add_argument("--projects", default=",".join(d.projects), help="comma-separated")
    parser.add_argument("--ip-prefix", default=d.ip_prefix)
    parser.add_argument("--heartbeat-port", type=int, default=d.heartbeat_port)
    parser.add_argument("--control-port", type=int, default=d.control_port)
    parser.add_argument("--vm-port", type=int, default=d.vm_port)
    parser.add_argument("--vm-mode", choices=VM_MODES, default=d.vm_mode)
    parser.add_argument("--api-host", default=d.api_host)
    parser.add_argument("--api-port", type=int, default=d.api_port)
    parser.add_argument("--events-url", default=None, help="where hosts PUT VM events")
    parser.add_argument(
        "--heartbeat", action=argparse.BooleanOptionalAction, default=d.heartbeat,
        help="guest heartbeats between hosts and their VMs",
    )  # fmt: skip
    parser.add_argument("--host-vcpus", type=int, default=d.host_vcpus, help="0: no limit")
    parser.add_argument("--host-ram-mb", type=int, default=d.host_ram_mb, help="0: no limit")
    parser.add_argument("--host-version", default=d.host_version, help="what hosts run at start")
    parser.add_argument("--services", default="", help="comma-separated services of every VM")
    parser.add_argument(
        "--server-group", default=None, help="a server group per project that its VMs join"
    )


def spec_from_args(ns: argparse.Namespace) -> LabSpec:
    return LabSpec(
        hosts=ns.hosts,
        vms=ns.vms,
        projects=split_projects(ns.projects),
        ip_prefix=ns.ip_prefix,
        heartbeat_port=ns.heartbeat_port,
        control_port=ns.control_port,
        vm_port=ns.vm_port,
        vm_mode=ns.vm_mode,
        api_host=ns.api_host,
        api_port=ns.api_port,
        events_url=ns.events_url,
        events_token=os.environ.get(EVENTS_TOKEN_ENV) or None,
        openstack_dir=os.environ.get(OPENSTACK_DIR_ENV) or None,
        heartbeat=ns.heartbeat,
        host_vcpus=ns.host_vcpus,
        host_ram_mb=ns.host_ram_mb,
        host_version=ns.host_version,
        services=split_projects(ns.services),
        server_group=ns.server_group or None,
    )


def split_projects(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]
