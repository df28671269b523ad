"""Fenix's v1 wire shapes (DESIGN §5): the bodies the admin, the owners' application
managers and their constraints send (bounded, each error naming its field), and the
JSON a session and the constraints are shown as.

Times travel as Fenix writes them, `YYYY-MM-DD HH:MM:SS` in UTC; ISO 8601 (with `T`,
`Z` or an offset) is taken too, as other tools write it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from opendoctor.api.auth import MAX_ID
from opendoctor.api.bounds import too_deep
from opendoctor.core.maintenance import (
    InstanceConstraints,
    InstanceGroupConstraints,
    Session,
)

MAX_NAME = 255  # a host, group or instance name, as the VIM keeps it
MAX_METADATA = 16_384  # bytes of a metadata object as JSON
MAX_METADATA_DEPTH = 8
MAX_ACTIONS = 20
MAX_HOSTS = 100_000  # the most maintenance.max_hosts may say; the setting is checked later
MAX_INSTANCES = 10_000  # one project's instances named in one answer
MAX_SECONDS = 7 * 86_400  # a lead, recovery or interruption time: a week is plenty
MAX_MEMBERS = 100_000
MAX_LIMIT = 1000

# --- path and query parameters -----------------------------------------------------------

SessionId = Annotated[str, Path(min_length=1, max_length=64, description="the session's id")]
ProjectId = Annotated[str, Path(min_length=1, max_length=MAX_ID, description="the project")]
GroupId = Annotated[
    str, Path(min_length=1, max_length=MAX_NAME, description="the instance group's id")
]
InstanceId = Annotated[
    str, Path(min_length=1, max_length=MAX_NAME, description="the instance's id")
]
Active = Annotated[
    bool | None, Query(description="true: only running sessions; false: only ended ones")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many (≤ {MAX_LIMIT})")]

# --- errors, as the OpenAPI document declares them ----------------------------------------

Responses = dict[int | str, dict[str, Any]]
E400: Responses = {400: {"description": "a field is invalid (the error names it)"}}
E403: Responses = {403: {"description": "the admin role is needed"}}
E403_PROJECT: Responses = {
    403: {"description": "the caller's project is not the one named (admin excepted)"}
}
E404: Responses = {404: {"description": "no such session, or constraints (another project's)"}}
E409: Responses = {
    409: {
        "description": "the session has ended, the answer is not to what the project was "
        "asked, the hosts are in a running session, or as many sessions run as may"
    }
}
E409_OWNED: Responses = {409: {"description": "the id is another project's"}}
E413: Responses = {413: {"description": "a body over api.max_body_bytes"}}
E503: Responses = {
    503: {"description": "planned maintenance is off (maintenance.enabled) or not run here"}
}

# --- values ---------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(9999, 1, 1, tzinfo=UTC)


def when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_when(text: str) -> float:
    """Epoch seconds of a time given as Fenix writes it (a time without a zone is UTC)."""
    try:
        # Python 3.11 reads "YYYY-MM-DD HH:MM:SS", the T form, "Z" and offsets alike.
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give YYYY-MM-DD HH:MM:SS (UTC) or ISO 8601"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # Kept where it can be written back as a date (an offset can push 9999-12-31 past it).
    if not _EPOCH <= at <= _LAST:
        raise ValueError(f"{text!r} is out of range: between 1970 and 9998")
    return at.timestamp()


def _a_time(text: str) -> str:
    parse_when(text)
    return text


_INT64 = 2**63


def _bounded_object(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is handed on whole (in notices' traits, to host actions): kept small, and
    only what the store's JSON encoder (orjson) and PostgreSQL take, so that it cannot
    fail a write after the session was accepted."""
    try:
        # The request's parser takes NaN, Infinity and lone surrogates; they are not JSON.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:
        raise ValueError("holds NaN, Infinity or a lone surrogate: not JSON") from None
    if len(text) > MAX_METADATA:
        raise ValueError(f"{len(text)} bytes as JSON, over {MAX_METADATA}")
    if too_deep(text, MAX_METADATA_DEPTH):
        raise ValueError(f"nests deeper than {MAX_METADATA_DEPTH} levels")
    if b"\\u0000" in text:
        raise ValueError("must not contain the NUL character")
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int) and not -_INT64 <= item < _INT64:
            raise ValueError(f"{item} is outside the 64-bit integers")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_object)]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_no_nul)]
HostName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME), AfterValidator(_no_nul)
]
Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME), AfterValidator(_no_nul)
]
Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
# Doctor's VNF manager writes "MIGRATION" where Fenix's documents write "MIGRATE".
_SPELLINGS = {"MIGRATION": "MIGRATE", "LIVE_MIGRATION": "LIVE_MIGRATE"}


def _as_fenix_spells(value: Any) -> Any:
    return _SPELLINGS.get(value, value) if isinstance(value, str) else value


MigrationType = Annotated[
    Literal["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"], BeforeValidator(_as_fenix_spells)
]
When = Annotated[str, StringConstraints(max_length=64), AfterValidator(_a_time)]
InstanceAction = Literal["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]

# --- bodies ---------------------------------------------------------------------------------


class HostActionIn(BaseModel):
    """What is done to each emptied host (Fenix's action plugins)."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = Field(
        min_length=1,
        max_length=64,
        description="power_cycle (its BMC), dummy (nothing), or workflow "
        '(metadata: {"workflow": "<name>"})',
    )
    type: Literal["host"] = "host"
    metadata: Metadata = Field(default_factory=dict)


class SessionIn(BaseModel):
    """A new session, as Fenix's clients and Doctor's admin tool send it."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[HostName] = Field(
        default_factory=list,
        max_length=MAX_HOSTS,
        description="the hosts to maintain, one after another; none: every host",
    )
    state: Literal["MAINTENANCE"] | None = Field(None, description="MAINTENANCE, if given")
    maintenance_at: When | None = Field(
        None,
        description="when to start: YYYY-MM-DD HH:MM:SS (UTC) or ISO 8601; none: now",
    )
    metadata: Metadata = Field(
        default_factory=dict, description="handed to the owners in each notice"
    )
    workflow: str = Field("default", min_length=1, max_length=64)
    actions: list[HostActionIn] = Field(
        default_factory=list,
        max_length=MAX_ACTIONS,
        description="what is done to each emptied host; none: maintenance.default_host_action",
    )

    def starts_at(self) -> float | None:
        return None if self.maintenance_at is None else parse_when(self.maintenance_at)


class AdminChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["pause", "resume"] = Field(
        description="pause: stop at the next safe point (a move under way ends first); "
        "resume: go on"
    )


class ProjectReply(BaseModel):
    """An owner's answer to a notice (`PUT <reply_url>`)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, max_length=64, description="if given, the path's")
    state: str = Field(
        pattern=r"^N?ACK_[A-Z_]{1,40}$",
        description="ACK_<state> or NACK_<state>, for the state the project was asked",
    )
    instance_ids: list[Ident] | None = Field(
        None, max_length=MAX_INSTANCES, description="answering MAINTENANCE: its instances"
    )
    instance_actions: dict[Ident, InstanceAction] | None = Field(
        None,
        max_length=MAX_INSTANCES,
        description="answering PREPARE_MAINTENANCE or PLANNED_MAINTENANCE: instance id → "
        "MIGRATE, LIVE_MIGRATE or OWN_ACTION",
    )
    instance_action: InstanceAction | None = Field(
        None,
        description="as Doctor's VNF manager answers: one action for all the project's "
        "instances in the session (instance_actions, if given, wins)",
    )


class GroupIn(BaseModel):
    """`/v1/instance_group/{group_id}`: how much of a group may be hurt at once."""

    model_config = ConfigDict(extra="forbid")

    group_id: Ident | None = Field(None, description="if given, the path's")
    project_id: Ident | None = Field(None, description="if given, the caller's (admin: any)")
    group_name: Name = ""
    anti_affinity_group: bool = False
    max_instances_per_host: int = Field(0, ge=0, le=MAX_MEMBERS, description="0: no limit")
    max_impacted_members: int = Field(
        1, ge=0, le=MAX_MEMBERS, description="members moving, or on a host emptied, at once"
    )
    recovery_time: Seconds = Field(
        0, description="seconds a member needs after a move before the next may go"
    )
    resource_mitigation: bool = False


class InstanceIn(BaseModel):
    """`/v1/instance/{instance_id}`: how one instance may be moved."""

    model_config = ConfigDict(extra="forbid")

    instance_id: Ident | None = Field(None, description="if given, the path's")
    project_id: Ident | None = Field(None, description="if given, the caller's (admin: any)")
    group_id: Ident | None = Field(None, description="its instance group, if any")
    instance_name: Name = ""
    migration_type: MigrationType = Field(
        "MIGRATE", description="how it moves when its owner does not answer"
    )
    max_interruption_time: Seconds = Field(0, description="seconds; 0: no limit")
    resource_mitigation: bool = False
    lead_time: Seconds = Field(0, description="seconds the owner needs before it is moved")


# --- views ----------------------------------------------------------------------------------


def session_summary(s: Session) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "state": s.state,
        "percent_done": s.percent_done(),
        "paused": s.paused,
        "waiting": s.waiting,
        "error": s.error,
        "maintenance_at": when(s.maintenance_at),
        "hosts": list(s.hosts),
    }


def session_listed(s: Session) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "state": s.state,
        "hosts": list(s.hosts),
        "maintenance_at": when(s.maintenance_at),
        "percent_done": s.percent_done(),
        "created": when(s.created),
        "updated": when(s.updated),
    }


def _with_times(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return record | {k: when(record[k]) for k in keys}


def session_detail(s: Session) -> dict[str, Any]:
    """Everything the engine keeps of a session, times as text."""
    return session_summary(s) | {
        "workflow": s.workflow,
        "metadata": s.metadata,
        "actions": s.actions,
        "created": when(s.created),
        "updated": when(s.updated),
        "ended": when(s.ended),
        "cancel_requested": s.cancel_requested,
        "current_host": s.current_host,
        "host_progress": [
            _with_times(asdict(h), "started", "finished") for h in s.host_progress.values()
        ],
        "instances": [_with_times(asdict(i), "started", "finished") for i in s.instances.values()],
        "projects": [
            _with_times(asdict(p), "asked_at", "deadline", "replied_at")
            for p in s.projects.values()
        ],
        "log": [{"at": when(at), "what": what} for at, what in s.log],
    }


def group_view(g: InstanceGroupConstraints) -> dict[str, Any]:
    return _with_times(asdict(g), "updated")


def instance_view(i: InstanceConstraints) -> dict[str, Any]:
    return _with_times(asdict(i), "updated")
