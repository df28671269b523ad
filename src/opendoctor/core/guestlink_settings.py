"""Server-group messaging's settings (`[guestlink]`, docs/server-groups.md): the host link
(`/v1/hostlink`), routing between the guests of a server group, and its limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The guest protocol's bound on one datagram (docs/guest-heartbeat.md): what fits in one
# frame of the channel with its envelope.
MAX_PAYLOAD = 3050


class GuestLinkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="serve /v1/hostlink and route server-group messages (api role)"
    )
    monitors: list[str] = Field(
        default_factory=lambda: ["*"],
        max_length=1000,
        description="the monitors (api.monitor_tokens) that may speak for hosts on the host "
        "link; * for every one",
    )
    refresh_interval: float = Field(
        60.0,
        gt=0.0,
        le=86_400.0,
        description="seconds between re-reads of the VIM's server groups (they are read at "
        "start and when a server changes, too)",
    )
    host_rate: float = Field(
        2000.0, gt=0.0, description="messages per second one host may post (its VMs together)"
    )
    host_burst: int = Field(
        4000, ge=100, description="messages a quiet host may post at once (at least a request)"
    )
    vm_rate: float = Field(50.0, gt=0.0, description="group sends per second of one VM")
    vm_burst: int = Field(100, ge=1, description="group sends a quiet VM may make at once")
    max_messages: int = Field(100, ge=1, le=1000, description="messages in one POST at most")
    max_body_bytes: int = Field(
        524_288, ge=4096, le=16_777_216, description="bytes of one POST's body at most"
    )
    stream_queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="down messages waiting for one host's stream; past it they are dropped "
        "(and counted): a slow host loses messages, the service does not grow",
    )
    restart_timeout_most: float = Field(
        600.0, gt=0.0, description="seconds a service restart may be given at most"
    )
