"""`openstack.json`: the running bed's processes (pids, URLs, hosts), and what a lab host's
power does to its nova-compute. No third-party module: the lab's manager loads it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from opendoctor.infra.procs import pid_alive
from opendoctor.lab.openstack import procs
from opendoctor.lab.openstack.spec import BedSpec, write_private
from opendoctor.lab.spec import OPENSTACK_DIR_ENV

TIE_ENV = OPENSTACK_DIR_ENV  # set in the lab's environment: see its definition


def tied_bed() -> BedSpec | None:
    directory = os.environ.get(TIE_ENV)
    return BedSpec(directory=Path(directory)) if directory else None


STATE_FILE = "openstack.json"


def read_state(spec: BedSpec) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((spec.directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def save_state(spec: BedSpec, state: dict[str, Any]) -> None:
    write_private(spec.directory / STATE_FILE, json.dumps(state, indent=2) + "\n")


def ports(state: dict[str, Any]) -> dict[str, int]:
    return {name: int(url.split(":")[2].split("/")[0]) for name, url in state["urls"].items()}


def kill_compute(spec: BedSpec, host: str) -> int | None:
    """SIGKILL a host's nova-compute, as the host's power loss would; its pid, if it ran.

    Nova then hears nothing more from it and, after `service_down_time`, reports its
    compute service down, as a real cloud would."""
    state = read_state(spec)
    for entry in (state or {}).get("processes", []):
        if entry["host"] == host and pid_alive(entry["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry["pid"], signal.SIGKILL)
            return int(entry["pid"])
    return None


def start_compute(spec: BedSpec, host: str) -> int | None:
    """Start a host's nova-compute again (its host is back); its pid, or None when no bed
    runs or the bed has no such host."""
    state = read_state(spec)
    if state is None:
        return None
    spec = BedSpec(Path(state.get("home", spec.home)), spec.directory)
    for entry in state["processes"]:
        if entry["host"] == host:
            if not pid_alive(entry["pid"]):
                service = next(s for s in procs.plan(spec, ports(state)) if s.host == host)
                entry["pid"] = procs.spawn(spec, service)
                save_state(spec, state)
            return int(entry["pid"])
    return None
