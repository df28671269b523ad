"""Aodh-compatible event alarms: the API body (pydantic, at the edge) and the compiled
form the notification path matches events against (plain dataclasses).

Matching follows Aodh's event evaluator: the alarm's event_type is a shell-style
pattern (fnmatch, case-sensitive) and every query term must hold. A term compares in
its declared type; with the "" (auto) type it compares in the type of the event's
trait, so numbers compare as numbers and strings as strings. A term on a trait the
event lacks, or whose values do not convert, does not hold.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opendoctor.core.alarms import Alarm
from opendoctor.core.model import (
    NotificationEvent,
    iso,
)
from opendoctor.core.terms import (
    MODE_OF_TYPE,
    OPS,
    compile_term,
    declared_value,
    is_pattern,
    term_holds,
)

State = Literal["ok", "alarm", "insufficient data"]
STATES: tuple[str, ...] = ("ok", "alarm", "insufficient data")
Severity = Literal["low", "moderate", "critical"]
Op = Literal["lt", "le", "eq", "ne", "ge", "gt"]
ValueType = Literal["", "string", "integer", "float", "boolean", "datetime"]

ACTION_SCHEMES = ("http", "https", "log", "amqp", "amqps")
AMQP_SCHEMES = ("amqp", "amqps")
MAX_ACTIONS = 10  # per list of an alarm
MAX_URL = 2048
REASON_NEW = "Not evaluated yet"
REASON_MANUAL = "Manually set via API"


def query_holds(alarm: Alarm, event: NotificationEvent) -> bool:
    return all(term_holds(term, event) for term in alarm.query)


def matches(alarm: Alarm, event: NotificationEvent) -> bool:
    """The event's type matches the alarm's pattern and all query terms hold."""
    pattern = alarm.event_type
    if is_pattern(pattern):
        if not fnmatchcase(event.event_type, pattern):
            return False
    elif pattern != event.event_type:
        return False
    return query_holds(alarm, event)


def to_api(alarm: Alarm) -> dict[str, Any]:
    """The alarm in Aodh's JSON shape."""
    return {
        "alarm_id": alarm.alarm_id,
        "name": alarm.name,
        "description": alarm.description,
        "type": alarm.type,
        "enabled": alarm.enabled,
        "state": alarm.state,
        "state_reason": alarm.state_reason,
        "state_timestamp": iso(alarm.state_timestamp),
        "timestamp": iso(alarm.timestamp),
        "severity": alarm.severity,
        "repeat_actions": alarm.repeat_actions,
        "alarm_actions": list(alarm.alarm_actions),
        "ok_actions": list(alarm.ok_actions),
        "insufficient_data_actions": list(alarm.insufficient_data_actions),
        "event_rule": alarm.rule(),
        "project_id": alarm.project_id,
        "user_id": alarm.user_id,
        "time_constraints": [],
    }


# --- the API body ---------------------------------------------------------------------------


def _check_pattern(pattern: str) -> str:
    if not pattern:
        raise ValueError("must not be empty (use '*' for every event type)")
    if any(c.isspace() for c in pattern):
        raise ValueError("must not contain whitespace")
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            # fnmatch: '!' negates, and a ']' right after '[' or '[!' is a literal member.
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            end = pattern.find("]", j)
            if end < 0:
                raise ValueError(f"unbalanced '[' at position {i} in {pattern!r}")
            i = end
        i += 1
    return pattern


def _check_action(url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ACTION_SCHEMES:
        raise ValueError(f"{url!r}: the URL scheme must be one of {', '.join(ACTION_SCHEMES)}")
    if parts.scheme in AMQP_SCHEMES:
        return _check_amqp_action(url)
    if parts.scheme != "log" and not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if any(c.isspace() for c in url):
        raise ValueError(f"{url!r} contains whitespace")
    return url


def _check_amqp_action(url: str) -> str:
    """`amqp[s]://user:pass@host[:port]/[vhost]?exchange=NAME&routing_key=KEY`."""
    try:
        from opendoctor.infra.amqp import parse_action_url
    except ImportError:
        raise ValueError(
            f"{url!r}: AMQP actions are not available on this server "
            "(it was installed without the 'amqp' extra)"
        ) from None
    parse_action_url(url)  # raises ValueError naming what is wrong
    if urlsplit(url).password is None:
        raise ValueError(
            f"{url!r}: give the broker's user and password (amqp://user:password@host/...); "
            "there is no default"
        )
    return url


ActionUrl = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_check_action)]


class QueryIn(BaseModel):
    """One query term as the client sends it. Field order matters: `value` is checked
    against `field` and `type`, which pydantic validates first."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="'event_type' or 'traits.<name>'")
    op: Op = "eq"
    type: ValueType = Field("", description="'' compares in the type of the event's trait")
    value: str

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        name = v.removeprefix("traits.")
        if v == "event_type" or (v.startswith("traits.") and name and not name.isspace()):
            return v
        raise ValueError(f"must be 'event_type' or 'traits.<name>', not {v!r}")

    @field_validator("op", mode="before")
    @classmethod
    def _op(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in OPS:
            raise ValueError(f"unknown operator {v!r}; use one of {', '.join(OPS)}")
        return v

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in MODE_OF_TYPE:
            known = ", ".join(repr(t) for t in MODE_OF_TYPE)
            raise ValueError(f"unknown value type {v!r}; use one of {known}")
        return v

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, v: Any, info: ValidationInfo) -> str:
        if isinstance(v, bool):
            text = "true" if v else "false"
        elif isinstance(v, int | float | str):
            text = str(v)
        else:
            raise ValueError("must be a string, a number or a boolean")
        declared = info.data.get("type")
        if declared:
            declared_value(text, declared)
        return text


class EventRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: Annotated[str, AfterValidator(_check_pattern)] = Field(
        "*", max_length=255, description="shell-style pattern, e.g. compute.instance.*"
    )
    query: list[QueryIn] = Field(default_factory=list, max_length=64)


def _unique(urls: list[str]) -> list[str]:
    return list(dict.fromkeys(urls))


# Each action is a call per firing: a handful is what an owner needs, and the cap keeps
# one alarm from fanning a fault out into thousands of calls.
Actions = Annotated[list[ActionUrl], Field(max_length=MAX_ACTIONS), AfterValidator(_unique)]


def _not_event(kind: str) -> str:
    return (
        f"alarm type {kind!r} is not supported: only 'event' alarms are served here "
        "(not threshold, gnocchi, prometheus, composite or load balancer alarms)"
    )


class AlarmBody(BaseModel):
    """The body of POST /v2/alarms and PUT /v2/alarms/{id}.

    Unknown top-level keys are ignored because Aodh clients update an alarm by
    sending back what they read, read-only fields (alarm_id, timestamps) included.
    """

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=255)
    type: str = Field(description="only 'event' alarms are supported")
    event_rule: EventRuleIn
    description: str | None = Field(None, max_length=4096)
    enabled: bool = True
    state: State | None = Field(None, description="initial state; on PUT, omitted keeps it")
    severity: Severity = "low"
    repeat_actions: bool = False
    alarm_actions: Actions = Field(default_factory=list)
    ok_actions: Actions = Field(default_factory=list)
    insufficient_data_actions: Actions = Field(default_factory=list)
    project_id: str | None = Field(None, min_length=1, max_length=255)
    user_id: str | None = Field(None, max_length=255)
    time_constraints: list[Any] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _only_events(cls, data: Any) -> Any:
        # Before the fields: an alarm of another type has no event_rule, and "event_rule:
        # Field required" beside the real reason would send its author the wrong way.
        kind = data.get("type") if isinstance(data, dict) else None
        if isinstance(kind, str) and kind != "event":
            raise PydanticCustomError("value_error", _not_event(kind), {"field": "type"})
        return data

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v != "event":
            raise ValueError(_not_event(v))
        return v

    @field_validator("time_constraints")
    @classmethod
    def _time_constraints(cls, v: list[Any]) -> list[Any]:
        if v:
            raise ValueError("time constraints are not supported for event alarms")
        return v

    def to_alarm(
        self, alarm_id: str, project_id: str, user_id: str, state: str, now: float
    ) -> Alarm:
        rule = self.event_rule
        terms = [compile_term(q.field, q.op, q.value, q.type) for q in rule.query]
        description = self.description
        if description is None:
            description = f"Alarm when {rule.event_type} event occurred."
        return Alarm(
            alarm_id=alarm_id,
            name=self.name,
            description=description,
            type=self.type,
            project_id=project_id,
            user_id=user_id,
            enabled=self.enabled,
            state=state,
            state_reason=REASON_NEW,
            state_timestamp=now,
            timestamp=now,
            severity=self.severity,
            repeat_actions=self.repeat_actions,
            alarm_actions=list(self.alarm_actions),
            ok_actions=list(self.ok_actions),
            insufficient_data_actions=list(self.insufficient_data_actions),
            event_type=rule.event_type,
            query=terms,
        )
