"""Fence devices in the configuration: the account's password from the environment
beside the file's device, never shown; a device that is not a Redfish URL is refused
with the field named."""

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
