"""`LabSpec`: defaults, addresses, validation, and the manager's options."""

from __future__ import annotations

import argparse

import pytest

from opendoctor.lab.spec import LabSpec, add_spec_arguments, spec_from_args


def test_defaults_and_addresses() -> None:
    spec = LabSpec()
    assert (spec.hosts, spec.vms, spec.projects) == (3, 6, ["project-a", "project-b"])
    assert (spec.heartbeat_port, spec.control_port, spec.vm_port) == (4100, 4101, 8080)
    assert (spec.vm_mode, spec.api_host, spec.api_port) == ("process", "127.0.0.1", 0)
    assert spec.host_address(2) == "127.0.1.2"
    assert spec.vm_address(1) == "127.0.2.1"
    assert spec.vm_address(254) == "127.0.2.254"
    assert spec.vm_address(255) == "127.0.3.1"
    assert spec.vm_address(1000) == "127.0.5.238"
    assert spec.host_alt_address(2) == "127.0.251.2"
    # VMs never spill into the VIPs' or the alt addresses' blocks.
    assert spec.vm_address(248 * 254) == "127.0.249.254"
    with pytest.raises(ValueError, match="too many VMs"):
        spec.vm_address(248 * 254 + 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"hosts": 0},
        {"hosts": 255},
        {"vms": -1},
        {"projects": []},
        {"vm_mode": "container"},
        {"ip_prefix": "10.0"},
        {"ip_prefix": "127.0.0"},
        {"vm_port": 0},
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LabSpec(**bad)  # type: ignore[arg-type]


def test_round_trips() -> None:
    spec = LabSpec(hosts=5, vms=40, projects=["p1", "p2"], ip_prefix="127.9", vm_mode="inline")
    assert LabSpec.from_dict(spec.to_dict()) == spec
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    assert spec_from_args(parser.parse_args(spec.to_args())) == spec
