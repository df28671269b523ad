"""Settings of the monitors operators already run (`[monitors]`, docs/monitors.md):
Prometheus Alertmanager, Zabbix, collectd, and Doctor events on a RabbitMQ queue.

Each tool's alert is a set of named fields (Alertmanager's labels, the Zabbix webhook's
macros, collectd's notification labels). Rules, tried in order, say which alerts are
faults and of which type; the host comes from the first of `host_fields` an alert has,
a server from the first of `server_fields`. What no rule matches is not a fault: an
operator routes everything to opendoctor, and only what it knows how to act on acts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from opendoctor.core.model import (
    HOST_DOWN,
    HOST_EVENTS,
    HOST_UNREACHABLE,
    INSTANCE_EVENTS,
    PROCESS_EXITED,
)

IGNORE = "ignore"
EVENT_TYPES = HOST_EVENTS | INSTANCE_EVENTS
# What a field name or pattern may be: configuration, but read at every alert.
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Severity = Literal["FAILURE", "WARNING"]


class Rule(BaseModel):
    """Alerts whose fields all match (shell-style patterns, `*` and `?`; a list: any of
    them) are faults of `type` (`ignore`: not a fault)."""

    model_config = ConfigDict(extra="forbid")

    match: dict[FieldName, Pattern | list[Pattern]] = Field(default_factory=dict, max_length=16)
    type: str = Field(description=f"an event type ({', '.join(sorted(EVENT_TYPES))}) or ignore")
    host_field: FieldName | None = Field(
        None, description="the field naming the host, instead of the adapter's host_fields"
    )

    @model_validator(mode="after")
    def _known_type(self) -> Rule:
        if self.type != IGNORE and self.type not in EVENT_TYPES:
            known = ", ".join(sorted(EVENT_TYPES))
            raise ValueError(f"rule type {self.type!r} is not {IGNORE} nor one of {known}")
        return self


def _rule(type_: str, host_field: str | None = None, **match: str | list[str]) -> Rule:
    return Rule(match=dict(match), type=type_, host_field=host_field)


class AdapterSettings(BaseModel):
    """What every adapter has: who may post to it, and how its alerts become events."""

    model_config = ConfigDict(extra="forbid")

    monitors: list[str] = Field(
        description="names of api.monitor_tokens that may post here (`*`: any monitor)"
    )
    host_fields: list[FieldName] = Field(
        description="fields naming the host, the first one present wins; a value "
        "`name:port` or `name.domain` is tried as `name` too, and an address as the host "
        "that has it",
        min_length=1,
    )
    server_fields: list[FieldName] = Field(
        default_factory=lambda: ["instance_id", "server_id", "uuid"],
        description="fields naming a server (VM) id, for the rules of server faults",
    )
    hosts: dict[str, str] = Field(
        default_factory=dict, description="the tool's name for a host -> opendoctor's host name"
    )
    rules: list[Rule] = Field(max_length=256)
    max_alerts: int = Field(1000, ge=1, le=100_000, description="alerts one request may carry")


class AlertmanagerSettings(AdapterSettings):
    """`POST /v1/monitors/alertmanager`: Alertmanager's webhook (firing and resolved)."""

    monitors: list[str] = Field(default_factory=lambda: ["alertmanager"])
    host_fields: list[FieldName] = Field(
        default_factory=lambda: ["hostname", "host", "nodename", "instance"], min_length=1
    )
    # The usual host alerts of node_exporter and blackbox setups. InstanceDown (`up == 0`)
    # says only that a scrape target is gone: reachable, not down, and nobody is fenced.
    rules: list[Rule] = Field(
        default_factory=lambda: [
            _rule(HOST_DOWN, alertname=["HostDown", "NodeDown"]),
            _rule(HOST_UNREACHABLE, alertname=["HostUnreachable", "InstanceDown"]),
            _rule(PROCESS_EXITED, alertname=["ServerDown", "VMDown"]),
        ],
        max_length=256,
    )


class ZabbixApiSettings(BaseModel):
    """The Zabbix API, read on demand (`POST /v1/monitors/zabbix/hosts/{host}/sync`)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None, description="e.g. https://zabbix.example.org/api_jsonrpc.php (none: not read)"
    )
    token: SecretStr | None = Field(
        None, description="an API token (Zabbix 5.4 and later); from the environment or a file"
    )
    token_file: Path | None = Field(None, description="a file holding the token; mode 600")
    user: str | None = Field(None, description="without a token: the user to log in as")
    password: SecretStr | None = None
    timeout: float = Field(10.0, gt=0, le=300)
    verify_tls: bool = True
    max_problems: int = Field(1000, ge=1, le=100_000, description="most problems read per host")


class ZabbixSettings(AdapterSettings):
    """`POST /v1/monitors/zabbix`: the webhook media type (problem, recovery), and the API."""

    monitors: list[str] = Field(default_factory=lambda: ["zabbix"])
    host_fields: list[FieldName] = Field(default_factory=lambda: ["host"], min_length=1)
    # The availability triggers of Zabbix's own templates (ICMP Ping; the agent's).
    rules: list[Rule] = Field(
        default_factory=lambda: [
            _rule(HOST_DOWN, event_name="*Unavailable by ICMP ping*"),
            _rule(HOST_UNREACHABLE, event_name="*Zabbix agent is not available*"),
        ],
        max_length=256,
    )
    api: ZabbixApiSettings = Field(default_factory=ZabbixApiSettings)


class Threshold(BaseModel):
    """A value of collectd's that crosses a bound opens a fault; back inside, it clears."""

    model_config = ConfigDict(extra="forbid")

    match: dict[FieldName, Pattern | list[Pattern]] = Field(
        default_factory=dict,
        max_length=16,
        description="on host, plugin, plugin_instance, type, type_instance",
    )
    data_source: FieldName | None = Field(None, description="the dsname (default: the first)")
    above: float | None = Field(None, description="a fault while the value is above it")
    below: float | None = Field(None, description="a fault while the value is below it")
    type: str = HOST_DOWN
    host_field: FieldName = "host"

    @model_validator(mode="after")
    def _bounded(self) -> Threshold:
        if self.above is None and self.below is None:
            raise ValueError("a threshold needs `above` or `below`")
        if self.type not in EVENT_TYPES:
            raise ValueError(f"threshold type {self.type!r} is not one of {sorted(EVENT_TYPES)}")
        return self


class CollectdSettings(AdapterSettings):
    """`POST /v1/monitors/collectd`: write_http's JSON (notifications, and values checked
    against `thresholds`)."""

    monitors: list[str] = Field(default_factory=lambda: ["collectd"])
    host_fields: list[FieldName] = Field(default_factory=lambda: ["instance"], min_length=1)
    # The ping plugin names the host it pings in the label named after it; values that
    # stop coming (the threshold plugin's "has not been updated") say only unreachable.
    rules: list[Rule] = Field(
        default_factory=lambda: [
            _rule(HOST_DOWN, host_field="ping", alertname="collectd_ping*"),
            _rule(HOST_UNREACHABLE, summary="*has not been updated for*"),
        ],
        max_length=256,
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list[Severity](["FAILURE"]),
        description="notification severities that are faults (OKAY clears)",
    )
    thresholds: list[Threshold] = Field(default_factory=list, max_length=256)


class QueueSettings(BaseModel):
    """Doctor events consumed from a RabbitMQ queue, for monitors that only publish."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="the broker, with the credential of opendoctor's consumer",
    )
    queue: str = Field("opendoctor.monitor-events", min_length=1, max_length=255)
    exchange: str | None = Field(
        "opendoctor.monitor-events",
        max_length=255,
        description="a topic exchange the queue is bound to, declared if missing (none: "
        "monitors publish to the queue through the default exchange)",
    )
    routing_key: str = Field("#", max_length=255, description="the binding's key")
    monitor: str = Field(
        "queue", min_length=1, max_length=255, description="who sent an event without a token"
    )
    require_token: bool = Field(
        False,
        description="refuse messages without an `x-auth-token` header naming a monitor "
        "token; with one, the event records that monitor",
    )
    prefetch: int = Field(32, ge=1, le=10_000)
    max_message_bytes: int = Field(1_048_576, ge=1, description="larger messages are refused")
    max_events: int = Field(1000, ge=1, le=100_000, description="events one message may carry")
    retry_delay: float = Field(
        1.0, gt=0, le=300, description="seconds between attempts to keep a message (the store down)"
    )


class MonitorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    zabbix: ZabbixSettings = Field(default_factory=ZabbixSettings)
    collectd: CollectdSettings = Field(default_factory=CollectdSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    max_held: int = Field(
        100_000,
        ge=1,
        description="alerts remembered as firing (so that one resolved does not clear a "
        "resource another still holds down); past it the oldest are forgotten",
    )
