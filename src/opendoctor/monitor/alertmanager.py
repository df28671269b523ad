"""Prometheus Alertmanager's webhook (`webhook_config`, payload version 4) as alerts.

Alertmanager posts a group's alerts together: those firing and, with `send_resolved`,
those that resolved. Each alert's labels are its fields, its `fingerprint` (a hash of
its labels, the same while it fires and when it resolves) its id.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opendoctor.core.errors import RequestError
from opendoctor.monitor.alerts import Alert
from opendoctor.monitor.formats import (
    Id,
    Invalid,
    Labels,
    Text,
    counted,
    epoch,
    fingerprint,
    load,
)

SOURCE = "alertmanager"


class AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: Text = ""
    fingerprint: Id = ""


class AmWebhook(BaseModel):
    """The body Alertmanager posts (alerts counted before: `max_alerts`)."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Text = ""
    groupKey: Text = ""
    truncatedAlerts: int = Field(0, ge=0)
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: Text = ""
    alerts: list[AmAlert]


def parse(raw: bytes, max_alerts: int) -> AmWebhook:
    """The webhook's body; `RequestError` or `Invalid` if it is not one."""
    body = load(raw)
    if not isinstance(body, dict):
        raise RequestError(400, "expected Alertmanager's webhook object", "body")
    counted(body.get("alerts"), max_alerts, "alerts", "monitors.alertmanager.max_alerts")
    try:
        return AmWebhook.model_validate(body)
    except ValidationError as exc:
        raise Invalid("", exc) from None


def alerts_of(hook: AmWebhook) -> list[Alert]:
    now = time.time()
    out = []
    for i, item in enumerate(hook.alerts):
        firing = item.status == "firing"
        # A resolved alert ended at endsAt; a firing one began at startsAt.
        at = epoch(item.startsAt if firing else item.endsAt, now)
        out.append(
            Alert(
                source=SOURCE,
                source_id=item.fingerprint or fingerprint(item.labels),
                fields=dict(item.labels),
                active=firing,
                at=at,
                where=f"alerts[{i}]",
                summary=item.annotations.get("summary", item.annotations.get("description", "")),
            )
        )
    return out
