"""The workflow engine's settings (`[workflow]`, docs/workflows.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine_ttl: float = Field(
        10.0,
        gt=1.0,
        le=300.0,
        description="seconds an engine's lease lasts; it renews it every third of that, and "
        "another process takes its executions over once it lapses (PostgreSQL: on SQLite "
        "one process owns the database and takes every execution at start)",
    )
    takeover_interval: float = Field(
        2.0, gt=0.0, le=60.0, description="how often an engine looks for executions to take over"
    )
    max_running: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="executions one engine runs at once; a start beyond it is refused (429)",
    )
    max_tasks: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="task executions one execution may have; beyond, it fails (a loop "
        "without end); each item of a with-items task counts as an action, not a task",
    )
    max_input_bytes: int = Field(
        1_048_576, ge=1024, le=16_777_216, description="the largest execution input, as JSON"
    )
    definition_cache_ttl: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="seconds a workflow definition read to start an execution is kept: a "
        "change made through another process shows in starts after at most this (one made "
        "here, at once); 0 reads it every time",
    )
    builtin: bool = Field(
        True, description="add the shipped workflows (host and VM recovery, switch-over) at start"
    )
