"""The recovery settings (`[recovery]`): fencing and its devices, host recovery by
evacuation, VM recovery (docs/recovery.md, docs/vm-recovery.md)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from opendoctor.core.egress import AllowList, EgressPolicy
from opendoctor.core.segments import RecoveryMethod

IPMI_PORT = 623  # RMCP's port (IPMI 2.0 section 13.1)
_REDFISH_ROOT = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# A DNS name or IPv4 address, or an IPv6 one in brackets, then an optional port.
_IPMI_ADDRESS = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?))"
    r"(?::(?P<port>\d{1,5}))?$"
)


def parse_ipmi_address(address: str) -> tuple[str, int]:
    """`host`, `host:port`, a bare IPv6 address or `[v6]:port` as (host, port)."""
    if address.count(":") > 1 and not address.startswith("["):
        return str(ipaddress.IPv6Address(address)), IPMI_PORT
    found = _IPMI_ADDRESS.match(address)
    if found is None:
        raise ValueError("must be host, host:port or [IPv6]:port (no scheme or path)")
    port = int(found["port"] or IPMI_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")
    if found["v6"]:
        return str(ipaddress.IPv6Address(found["v6"])), port
    return found["name"], port


class FenceDeviceSettings(BaseModel):
    """A host's BMC: Redfish (a service root URL) or IPMI over LAN (RMCP+, `host:port`).
    The password is a secret: from the environment or a mode-600 file, never logged or
    shown by the API."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["redfish", "ipmi"] = "redfish"
    address: str = Field(
        ...,
        max_length=2048,
        description="redfish: the service root, e.g. https://bmc-compute1/redfish/v1; "
        "ipmi: the BMC as host or host:port (default port 623), e.g. bmc-compute1",
    )
    system: str | None = Field(
        None,
        max_length=255,
        description="redfish: the ComputerSystem's id; default: the only one",
    )
    username: str = Field(..., min_length=1, max_length=255)
    password: SecretStr = Field(SecretStr(""), description="the BMC account's password")
    verify_tls: bool = Field(True, description="redfish: check the BMC's certificate")

    @field_validator("address")
    @classmethod
    def _address_fits_driver(cls, value: str, info: ValidationInfo) -> str:
        # `driver` comes first, so it is validated (or refused) by now.
        if info.data.get("driver") == "ipmi":
            parse_ipmi_address(value)
        elif not _REDFISH_ROOT.match(value):
            raise ValueError("must be the Redfish service root, an http(s) URL")
        return value

    @field_validator("system")
    @classmethod
    def _system_is_redfish(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("driver") == "ipmi":
            raise ValueError("is for the redfish driver only (an IPMI BMC has one system)")
        return value

    @field_validator("username")
    @classmethod
    def _ipmi_username_fits(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("driver") == "ipmi" and len(value.encode()) > 16:
            raise ValueError("an IPMI user name has at most 16 bytes")
        return value

    @property
    def ipmi_endpoint(self) -> tuple[str, int]:
        """An IPMI BMC's (host, port)."""
        return parse_ipmi_address(self.address)


class FencingSettings(BaseModel):
    devices: dict[str, FenceDeviceSettings] = Field(
        default_factory=dict, description="each host's fence device, by host name"
    )
    confirm_timeout: float = Field(
        10.0, gt=0, le=600, description="seconds for a host to report its power off"
    )
    egress_allow: AllowList = Field(
        default_factory=list,
        description="what fence devices registered through the API may be called at, "
        "besides public addresses: `10.9.0.0/16`, `192.0.2.7:623` (BMC networks are "
        "private; configured devices are trusted as they are)",
    )
    key_file: Path | None = Field(
        None,
        description="the key sealing the passwords of devices registered through the API "
        "(default: STATE_DIR/fence-devices.key, made on first use); give every process "
        "of a scaled-out service the same file",
    )
    without_device: Literal["refuse", "evacuate"] = Field(
        "refuse",
        description="a failed host with no fence device: refuse (evacuate nothing, raise "
        "the alarm: its VMs may still run) or evacuate unfenced (only where the host's "
        "VMs cannot outlive it, e.g. no shared storage)",
    )
    retry_first: float = Field(
        1.0, gt=0, le=600, description="seconds before a failed fence is tried again"
    )
    retry_most: float = Field(
        60.0, gt=0, le=3600, description="the longest wait between fence attempts (doubling)"
    )
    retry_for: float = Field(
        600.0,
        ge=0,
        le=86400,
        description="seconds to keep retrying a failed fence before its servers' recovery "
        "is given up (failed); the alarm stays until a fence is confirmed",
    )

    def egress(self) -> EgressPolicy:
        return EgressPolicy.of(self.egress_allow)


class VmRecoverySettings(BaseModel):
    """One failed server on a healthy host (`recovery.vm`, docs/vm-recovery.md): restarted
    in place, then moved by a cold migration if restarts do not bring it back."""

    enabled: bool = True
    attempts: int = Field(
        2, ge=1, le=10, description="restarts in place (stop, start) before the server is moved"
    )
    serve_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds after a restart or move for it to serve again"
    )
    migrate: bool = Field(True, description="move the server once its restarts have failed")
    concurrency: int = Field(8, ge=1, le=1000, description="servers restarted or moved at once")
    workflow: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="recover a failed server by this workflow instead of the built-in steps "
        "(`opendoctor.vm_recovery`, or your copy: docs/workflows.md); it is given `server_id`",
    )


class RecoverySettings(BaseModel):
    enabled: bool = True
    vm: VmRecoverySettings = Field(default_factory=VmRecoverySettings)
    fencing: FencingSettings = Field(default_factory=FencingSettings)
    concurrency: int = Field(8, ge=1, le=1000, description="servers evacuated in parallel")
    serve_timeout: float = Field(15.0, gt=0, description="seconds for a server to serve again")
    default_method: RecoveryMethod = Field(
        "auto",
        description="how the servers of a host in no failover segment are recovered (every "
        "server of such a host is recovered); a segment's own method applies to its hosts",
    )
    evacuate_attempts: int = Field(
        3, ge=1, le=10, description="target hosts tried per server before it is given up"
    )
    host_workflow: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="recover a failed host by this workflow instead of the built-in steps "
        "(`opendoctor.host_recovery`, or your copy: docs/workflows.md); it is given `host` "
        "and `servers`, and its output's `moved` lists the servers it moved",
    )
    cut_link: Literal["leave", "fence-and-evacuate"] = Field(
        "leave",
        description="a host that only lost its management link (it answers on its second "
        "path) still runs its VMs: leave them (default), or fence it and evacuate them",
    )
