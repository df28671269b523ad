"""collectd's `write_http` plugin, `Format "JSON"`, as alerts.

A notification comes as `{"labels", "annotations", "startsAt"}`: its labels are
`alertname` (collectd_<plugin>_<type>), `instance` (the host that sent it), `severity`
(FAILURE, WARNING, OKAY), `service`, and one named after the plugin holding its
plugin or type instance (the ping plugin's: the host it pings). Its fields are the
labels and `summary` (the message). collectd gives it no id: the labels without the
severity are one, the same for the FAILURE and the OKAY that ends it.

Values (`"Metrics" true`) come as value lists; those that cross one of the operator's
`thresholds` make alerts, and make them again only when they cross back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from opendoctor.core.errors import RequestError
from opendoctor.core.monitor_settings import CollectdSettings, Rule, Threshold
from opendoctor.monitor.alerts import Alert, Skipped, matches
from opendoctor.monitor.formats import (
    Invalid,
    Labels,
    Name,
    counted,
    epoch,
    fingerprint,
    load,
)

SOURCE = "collectd"
SETTING = "monitors.collectd.max_alerts"
IDENTITY = ("host", "plugin", "plugin_instance", "type", "type_instance")
Part = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00]*$")]


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")

    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: datetime | None = None


class ValueList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    values: list[float | None] = Field(min_length=1, max_length=64)
    dsnames: list[Name] = Field(min_length=1, max_length=64)
    time: float = 0.0
    host: Part
    plugin: Part
    plugin_instance: Part = ""
    type: Part
    type_instance: Part = ""


def parse(raw: bytes, max_alerts: int) -> list[Notification | ValueList]:
    """The posted list; `RequestError` or `Invalid` if it is not write_http's JSON."""
    items = counted(load(raw), max_alerts, "body", SETTING)
    out: list[Notification | ValueList] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(400, "expected a notification or a value list", f"[{i}]")
        model = Notification if "labels" in item else ValueList
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            raise Invalid(f"[{i}]", exc) from None
    return out


def notification_alert(note: Notification, i: int, settings: CollectdSettings) -> Alert | Skipped:
    where = f"[{i}]"
    severity = note.labels.get("severity", "").upper()
    if severity != "OKAY" and severity not in settings.severities:
        problem = f"severity {severity or 'none'} is not a fault (monitors.collectd.severities)"
        return Skipped(where, "labels.severity", problem)
    ident = {k: v for k, v in note.labels.items() if k != "severity"}
    fields = dict(note.labels)
    summary = note.annotations.get("summary", "")
    if summary:
        fields.setdefault("summary", summary)
    return Alert(
        source=SOURCE,
        source_id=fingerprint(ident),
        fields=fields,
        active=severity != "OKAY",
        at=epoch(note.startsAt, time.time()),
        where=where,
        summary=summary,
    )


class Crossings:
    """Which value lists are outside their threshold now, to report only crossings.
    Bounded: past `limit` series the oldest are forgotten (reported again if outside)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._outside: OrderedDict[str, bool] = OrderedDict()

    def crossed(self, series: str, outside: bool) -> bool:
        before = self._outside.get(series)
        self._outside[series] = outside
        self._outside.move_to_end(series)
        while len(self._outside) > self.limit:
            self._outside.popitem(last=False)
        # The first value seen counts as a crossing only if it is outside.
        return outside if before is None else before != outside


def _value(values: ValueList, threshold: Threshold) -> float | None:
    name = threshold.data_source
    if name is None:
        at = 0
    elif name in values.dsnames:
        at = values.dsnames.index(name)
    else:
        return None
    value = values.values[at] if at < len(values.values) else None
    return None if value is None or math.isnan(value) else value


def _bounds(threshold: Threshold) -> str:
    parts = []
    if threshold.above is not None:
        parts.append(f"above {threshold.above:g}")
    if threshold.below is not None:
        parts.append(f"below {threshold.below:g}")
    return " or ".join(parts)


def _outside(value: float, threshold: Threshold) -> bool:
    above = threshold.above is not None and value > threshold.above
    below = threshold.below is not None and value < threshold.below
    return above or below


def value_alerts(
    values: ValueList, i: int, thresholds: Sequence[Threshold], crossings: Crossings
) -> list[Alert]:
    fields = {name: getattr(values, name) for name in IDENTITY}
    series = fingerprint(fields)
    out = []
    for n, threshold in enumerate(thresholds):
        if not matches(threshold.match, fields):
            continue
        value = _value(values, threshold)
        if value is None:
            continue
        outside = _outside(value, threshold)
        if not crossings.crossed(f"{n}:{series}", outside):
            continue
        out.append(
            Alert(
                source=SOURCE,
                source_id=f"threshold{n}:{series}",
                fields=dict(fields, value=repr(value)),
                active=outside,
                at=values.time or time.time(),
                where=f"[{i}]",
                summary=f"{'/'.join(v for v in fields.values() if v)} is {value:g} "
                f"(a fault {_bounds(threshold)})",
                rule=Rule(type=threshold.type, host_field=threshold.host_field),
            )
        )
    return out


def alerts_of(
    items: list[Notification | ValueList], settings: CollectdSettings, crossings: Crossings
) -> tuple[list[Alert], list[Skipped]]:
    alerts: list[Alert] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(items):
        if isinstance(item, Notification):
            found = notification_alert(item, i, settings)
            if isinstance(found, Skipped):
                skipped.append(found)
            else:
                alerts.append(found)
        else:
            alerts += value_alerts(item, i, settings.thresholds, crossings)
    return alerts, skipped
