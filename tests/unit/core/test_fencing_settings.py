"""Fence devices in the configuration: the account's password from the environment
beside the file's device, never shown; a Redfish device's address is a URL, an IPMI
device's host[:port]; what does not fit its driver is refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opendoctor.core.settings import load_settings

DEVICE = """
[recovery.fencing.devices.compute1]
address = "https://bmc-compute1.example/redfish/v1"
system = "1"
username = "fencer"
"""


def test_a_device_takes_its_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "opendoctor.toml"
    config.write_text(DEVICE)
    monkeypatch.setenv("OPENDOCTOR_RECOVERY__FENCING__DEVICES__COMPUTE1__PASSWORD", "s3cret-pw")
    settings = load_settings(config)
    device = settings.recovery.fencing.devices["compute1"]
    assert (device.username, device.system) == ("fencer", "1")
    assert device.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in settings.model_dump_json()


def test_a_device_address_must_be_a_url(tmp_path: Path) -> None:
    config = tmp_path / "opendoctor.toml"
    config.write_text(DEVICE.replace("https://bmc-compute1.example/redfish/v1", "bmc1 ; rm"))
    with pytest.raises(ValidationError) as refused:
        load_settings(config)
    assert "recovery.fencing.devices.compute1.address" in str(refused.value)


IPMI_DEVICES = """
[recovery.fencing.devices.compute1]
driver = "ipmi"
address = "bmc-compute1.example"
username = "fencer"

[recovery.fencing.devices.compute2]
driver = "ipmi"
address = "[fd00::12]:6230"
username = "fencer"
"""


def test_an_ipmi_device_is_host_and_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "opendoctor.toml"
    config.write_text(IPMI_DEVICES)
    monkeypatch.setenv("OPENDOCTOR_RECOVERY__FENCING__DEVICES__COMPUTE1__PASSWORD", "s3cret-pw")
    devices = load_settings(config).recovery.fencing.devices
    assert devices["compute1"].driver == "ipmi"
    assert devices["compute1"].ipmi_endpoint == ("bmc-compute1.example", 623)  # RMCP's port
    assert devices["compute1"].password.get_secret_value() == "s3cret-pw"
    assert devices["compute2"].ipmi_endpoint == ("fd00::12", 6230)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ('address = "https://bmc-compute1.example/redfish/v1"', "address"),  # a URL is Redfish's
        ('address = "bmc-compute1.example:70000"', "address"),
        ('address = "bmc1 ; rm"', "address"),
        ('system = "1"', "system"),  # an IPMI BMC has one system
        ('username = "a-name-of-17-bytes"', "username"),  # IPMI's limit is 16
        ('driver = "ilo"', "driver"),
    ],
)
def test_a_wrong_ipmi_device_is_refused_by_its_field(
    tmp_path: Path, change: str, field: str
) -> None:
    key = change.split(" = ")[0]
    lines = [
        line
        for line in IPMI_DEVICES.split("[recovery.fencing.devices.compute2]")[0].splitlines()
        if not line.startswith(f"{key} = ")
    ]
    config = tmp_path / "opendoctor.toml"
    config.write_text("\n".join([*lines, change]) + "\n")
    with pytest.raises(ValidationError) as refused:
        load_settings(config)
    assert f"recovery.fencing.devices.compute1.{field}" in str(refused.value)
