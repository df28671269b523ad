"""The OpenStack test bed's own bookkeeping, without OpenStack: which bed counts as
running, and what each nova-compute reports as its address."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from opendoctor.lab.openstack import bed, configs
from opendoctor.lab.openstack.spec import BedSpec
from opendoctor.lab.openstack.state import save_state


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def state(control: int, compute: int) -> dict[str, object]:
    return {
        "urls": {},
        "hosts": ["compute1"],
        "processes": [
            {"name": "keystone", "pid": control, "url": "http://x", "host": None},
            {"name": "nova-compute-compute1", "pid": compute, "url": None, "host": "compute1"},
        ],
    }


def test_a_bed_with_a_powered_off_compute_host_is_still_running(tmp_path: Path) -> None:
    spec = BedSpec(directory=tmp_path)
    assert bed.running(spec) is None  # no state at all
    save_state(spec, state(control=os.getpid(), compute=dead_pid()))
    assert bed.running(spec) is not None
    save_state(spec, state(control=dead_pid(), compute=os.getpid()))
    assert bed.running(spec) is None


def test_each_compute_host_reports_the_address_of_its_lab_host(tmp_path: Path) -> None:
    spec = BedSpec(directory=tmp_path, lab_prefix="127.42")
    assert [spec.host_address(h) for h in spec.hosts] == ["127.42.1.1", "127.42.1.2", "127.42.1.3"]
    assert configs.nova_compute(spec, "compute2")["DEFAULT"]["my_ip"] == "127.42.1.2"
    # The shared file keeps the APIs' address; only the per-host files differ.
    assert configs.nova(spec, configs.urls(spec, ports()), secrets())["DEFAULT"]["my_ip"] == (
        "127.0.0.1"
    )


@pytest.mark.parametrize("prefix", ["10.0", "127", "127.0.1", "127.300", "127.x"])
def test_a_lab_prefix_off_loopback_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="lab_prefix"):
        BedSpec(lab_prefix=prefix)


def ports() -> dict[str, int]:
    return {
        name: 1000 + i
        for i, name in enumerate(("keystone", "placement", "glance", "neutron", "nova"))
    }


def secrets() -> configs.Secrets:
    return configs.Secrets.new()
