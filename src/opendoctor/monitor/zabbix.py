"""Zabbix as alerts: the webhook media type's body, and problems read from its API.

The webhook's body is an object of the operator's macros (docs/monitors.md gives the
media type): `event_id` ({EVENT.ID}, the problem's id, also in its recovery),
`event_value` ({EVENT.VALUE}: 1 problem, 0 recovery), `host` ({HOST.HOST}),
`event_name`, `severity`, `event_tags` ({EVENT.TAGSJSON}) and any others; every one is
a field the rules can match, each tag as `tags.<name>`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from opendoctor.core.errors import RequestError
from opendoctor.monitor.alerts import Alert
from opendoctor.monitor.formats import MAX_LABELS, MAX_NAME, Id, Invalid, Text, load

SOURCE = "zabbix"
# Zabbix's default severity names, by {EVENT.NSEVERITY} (the API's `severity`).
SEVERITIES = ("Not classified", "Information", "Warning", "Average", "High", "Disaster")
# A macro Zabbix could not resolve is sent as written: as good as absent.
_UNRESOLVED = re.compile(r"^(\{[A-Z0-9_.#$]+\}|\*UNKNOWN\*)$")


class Tag(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tag: Id
    value: Text = ""


class WebhookBody(BaseModel):
    """One event, problem or recovery, as the media type's script posts it: the named
    parameters below, and any others, each a string."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Text]

    event_id: Id = Field(min_length=1)
    event_value: Literal["0", "1"] = Field(description="{EVENT.VALUE}: 1 a problem, 0 its recovery")
    event_tags: list[Tag] = Field(default_factory=list, max_length=MAX_LABELS)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if len(data) > MAX_LABELS:
                raise PydanticCustomError(
                    "too_long", "more than {n} parameters", {"n": MAX_LABELS, "field": "body"}
                )
            for name in data:
                if not (0 < len(name) <= MAX_NAME) or "\x00" in name:
                    raise PydanticCustomError(
                        "value_error",
                        "a parameter's name has 1 to {n} characters, no NUL",
                        {"n": MAX_NAME, "field": "body"},
                    )
        return data

    @property
    def fields(self) -> dict[str, str]:
        return dict(self.model_extra or {})


def _given(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in body.items() if not (isinstance(v, str) and _UNRESOLVED.match(v.strip()))
    }


def _tags(raw: object) -> object:
    """{EVENT.TAGSJSON} arrives as a string of JSON (a macro), or already parsed."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw) if raw.strip() else []
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, f"not a JSON list of tags: {exc}", "event_tags") from exc
    return [] if raw is None else raw


def parse(raw: bytes) -> WebhookBody | None:
    """The body; None for what is not a trigger's problem or recovery (an update, say).
    `RequestError` or `Invalid` if it is not the media type's body."""
    body = load(raw)
    if not isinstance(body, dict):
        raise RequestError(400, "expected an object of the media type's parameters", "body")
    body = _given(body)
    if str(body.get("event_source", "0")) != "0" or str(body.get("event_update_status")) == "1":
        return None  # discovery, autoregistration, internal events; acks and comments
    body["event_tags"] = _tags(body.get("event_tags"))
    for name in ("event_id", "event_value"):
        if isinstance(body.get(name), int):
            body[name] = str(body[name])
    try:
        return WebhookBody.model_validate(body)
    except ValidationError as exc:
        raise Invalid("", exc) from None


def _with_tags(fields: Mapping[str, str], tags: Iterable[Tag]) -> dict[str, str]:
    out = dict(fields)
    for tag in tags:
        out.setdefault(f"tags.{tag.tag}", tag.value)
    return out


def _sent_at(fields: Mapping[str, str], default: float) -> float:
    """When the media type's script sent it (`sent_at`, epoch seconds). Zabbix's own
    {EVENT.DATE} {EVENT.TIME} are in the server's zone, which the body does not say."""
    try:
        at = float(fields.get("sent_at", ""))
    except ValueError:
        return default
    return at if math.isfinite(at) and at > 0 else default


def alert_of(body: WebhookBody) -> Alert:
    problem = body.event_value == "1"
    fields = _with_tags(body.fields, body.event_tags)
    return Alert(
        source=SOURCE,
        source_id=body.event_id,
        fields=fields,
        active=problem,
        at=_sent_at(fields, time.time()),
        where="body",
        summary=fields.get("event_name") or fields.get("trigger_name", ""),
    )


def problem_alerts(host: str, problems: Iterable[Mapping[str, Any]]) -> list[Alert]:
    """A host's open problems, as the API's `problem.get` returns them."""
    out = []
    for i, problem in enumerate(problems):
        try:
            nseverity = int(problem.get("severity", 0))
        except (TypeError, ValueError):
            nseverity = 0
        name = str(problem.get("name", ""))[:2048]
        fields = {
            "host": host,
            "event_id": str(problem.get("eventid", ""))[:128],
            "event_name": name,
            "severity": SEVERITIES[nseverity] if 0 <= nseverity < 6 else str(nseverity),
            "event_nseverity": str(nseverity),
        }
        tags = [
            Tag(tag=str(t.get("tag", ""))[:128], value=str(t.get("value", ""))[:2048])
            for t in problem.get("tags") or []
            if isinstance(t, Mapping)
        ][:MAX_LABELS]
        clock = str(problem.get("clock", ""))
        out.append(
            Alert(
                source=SOURCE,
                source_id=fields["event_id"],
                fields=_with_tags(fields, tags),
                active=True,
                at=float(clock) if str(clock).isdigit() else time.time(),
                where=f"problems[{i}]",
                summary=name,
            )
        )
    return out
