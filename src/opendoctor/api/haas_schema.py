"""The bodies of `/v1/clusters` (`api.haas`): every field bounded, unknown ones refused."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from opendoctor.core.haas import (
    MAX_DOMAIN,
    MAX_NODES,
    MAX_PRIORITY,
    MAX_PROPERTIES,
    MAX_RETRIES,
    MAX_TIMEOUT,
    NAME_MAX,
    PROPERTY_MAX,
    TEXT_MAX,
    AppliesTo,
    FenceKind,
    Level,
    NodeKind,
    Operation,
    Role,
)


def _no_control(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ValueError("must not contain control characters (NUL, newlines, tabs)")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_MAX), AfterValidator(_no_control)
]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX), AfterValidator(_no_nul)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=36), AfterValidator(_no_control)]
GuestName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Value = Annotated[str, StringConstraints(max_length=PROPERTY_MAX), AfterValidator(_no_nul)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterIn(Body):
    name: Name
    level: Level = Field("vm", description="vm, application (tenants), host, cloud-service")
    description: Text = ""
    project_id: Name | None = Field(
        None, description="the project it is for (admin only; default: the caller's)"
    )


class NodeIn(Body):
    kind: NodeKind = Field("server", description="server (its id) or host (its name)")
    ref: Name = Field(..., description="the server's id, or the host's name")
    role: Role = Field("none", description="active, standby or none")
    priority: int = Field(0, ge=0, le=MAX_PRIORITY, description="lower takes over first")


class ResourceIn(Body):
    name: Name
    kind: Name = Field(..., description="what it is: ip, volume, ...")
    properties: dict[Name, Value] = Field(default_factory=dict, max_length=MAX_PROPERTIES)
    node_id: Id | None = Field(None, description="the node that holds it")


class ServiceIn(Body):
    name: Name
    guest_name: GuestName = Field(..., description="its name to the guest agent (--service)")
    node_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_NODES, description="nodes running it (none: all)"
    )


class FencingDeviceIn(Body):
    node_id: Id
    kind: FenceKind = Field(
        ..., description="bmc (a host node's registered BMC) or vim (stop the server)"
    )


class PolicyIn(Body):
    name: Name
    operation: Operation
    applies_to: AppliesTo = "node"
    services: list[Name] = Field(
        default_factory=list, max_length=MAX_NODES, description="service names (none: all)"
    )
    domain: list[Name] = Field(
        default_factory=list,
        max_length=MAX_DOMAIN,
        description="evacuate: host names to move to; switch-over: nodes that may take over",
    )
    priority: int = Field(0, ge=0, le=MAX_PRIORITY, description="lower is tried first")
    timeout: float = Field(60.0, gt=0, le=MAX_TIMEOUT, description="seconds per attempt")
    retries: int = Field(0, ge=0, le=MAX_RETRIES, description="attempts after the first")
