"""Planned maintenance's settings (`[maintenance]`, docs/maintenance.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MaintenanceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="serve /v1/maintenance and run sessions")
    reply_timeout: float = Field(
        60.0,
        gt=0.0,
        le=86_400.0,
        description="seconds an owner has to answer a notice (`actions_at`) before the "
        "default applies (MAINTENANCE: go on; instance actions: each instance's "
        "`migration_type`, else `default_instance_action`)",
    )
    complete_wait: float = Field(
        10.0, ge=0.0, le=3600.0, description="seconds to wait for MAINTENANCE_COMPLETE answers"
    )
    default_instance_action: Literal["MIGRATE", "LIVE_MIGRATE"] = Field(
        "MIGRATE",
        description="how an instance moves when neither its owner nor its constraints say",
    )
    default_host_action: str = Field(
        "power_cycle",
        description="what is done to an empty host when the session names no `actions`: "
        "`power_cycle` (its BMC, as fencing reaches it), `dummy` (nothing: drain and "
        "return), or `workflow:<name>` (a workflow given the host)",
    )
    move_timeout: float = Field(
        600.0, gt=0.0, le=86_400.0, description="seconds one instance's move may take"
    )
    host_timeout: float = Field(
        900.0,
        gt=0.0,
        le=86_400.0,
        description="seconds a host may take to be maintained and come back up",
    )
    own_action_timeout: float = Field(
        600.0,
        gt=0.0,
        le=86_400.0,
        description="seconds an owner that chose OWN_ACTION has to take its instance off",
    )
    max_parallel_moves: int = Field(
        8, ge=1, le=256, description="instances moving at once (a group's own limit applies too)"
    )
    max_parallel_hosts: int = Field(
        1,
        ge=1,
        le=100,
        description="hosts taken out at once where the constraints allow (no group more "
        "impacted than its max_impacted_members, room left for what moves); a session's "
        "`metadata.max_parallel_hosts` overrides it",
    )
    pause_on_fault: bool = Field(
        True,
        description="hold a session between hosts while another host has an active fault "
        "(its capacity is needed for recovery); it goes on once the fault clears",
    )
    max_sessions: int = Field(
        20, ge=1, le=1000, description="sessions running at once; more are refused (409)"
    )
    max_hosts: int = Field(1000, ge=1, le=100_000, description="hosts one session may name")
    public_url: str | None = Field(
        None,
        description="the URL owners reach this API on, for the `reply_url` and "
        "`instance_ids` links of notices; default http://<api.host>:<api.port>",
    )
    step_interval: float = Field(
        0.2, gt=0.0, le=10.0, description="how often a waiting session looks again"
    )
