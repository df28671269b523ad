"""Settings: defaults, then a TOML file, then `OPENDOCTOR_*` environment variables.

Nested groups use a double underscore in the environment, for example
`OPENDOCTOR_MONITOR__INTERVAL=0.1` or `OPENDOCTOR_API__PORT=9000`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opendoctor.core.egress import AllowList, EgressPolicy
from opendoctor.core.guestlink_settings import GuestLinkSettings
from opendoctor.core.maintenance_settings import MaintenanceSettings
from opendoctor.core.monitor_settings import MonitorsSettings
from opendoctor.core.recovery_settings import RecoverySettings
from opendoctor.core.secretfile import read_secret_file
from opendoctor.core.workflow_settings import WorkflowSettings


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opendoctor"


def is_loopback(host: str) -> bool:
    """Whether a listening address is on loopback only (a name: only `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeystoneSettings(BaseModel):
    """keystone mode: callers' X-Auth-Token validated against Keystone (docs/openstack.md)."""

    auth_url: str = Field("", description="Keystone's identity URL, e.g. http://ctl:5000/v3")
    username: str = Field("opendoctor", description="opendoctor's service user")
    password: SecretStr = Field(
        SecretStr(""), description="its password; from the environment or a mode-600 file"
    )
    project: str = Field("service", description="the project the service user's token is for")
    user_domain: str = "Default"
    project_domain: str = "Default"
    region: str | None = Field(None, description="the region of the catalog endpoints")
    cache_seconds: float = Field(
        300.0, gt=0, description="how long a validated token is believed without asking again"
    )
    register_in_catalog: bool = Field(
        True,
        description="add opendoctor to the catalog at start (types `alarming` and "
        "`fault-management`) where it is missing; needs a role that may change it",
    )
    public_url: str | None = Field(
        None, description="the URL the catalog gives for opendoctor; default http://host:port"
    )
    monitor_roles: list[str] = Field(
        default_factory=lambda: ["admin", "service"],
        description="a Keystone token with one of these roles may also report events",
    )


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8780, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, gt=0, description="larger request bodies get 413")
    auth_mode: Literal["trusted-headers", "token", "keystone"] = "trusted-headers"
    keystone: KeystoneSettings = Field(default_factory=KeystoneSettings)
    # token mode: token -> {"project_id": ..., "user_id": ..., "roles": [...]}
    tokens: dict[str, dict[str, Any]] = Field(default_factory=dict)
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="trusted-headers mode: the proxies (addresses or networks) whose "
        "identity headers are believed, besides loopback; needed to listen beyond loopback",
    )
    monitor_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="monitor name -> the X-Auth-Token it sends to the events API; each "
        "event records the name of the monitor that sent it",
    )
    monitor_tokens_file: Path | None = Field(
        None,
        description="a file of `name token` lines, more monitor tokens; it must not be "
        "readable by group or others",
    )
    audit_retention_days: float = Field(
        90.0, gt=0, description="days the audit trail (GET /v1/audit) keeps an entry"
    )
    anonymous_monitors: bool = Field(
        False,
        description="take events from callers without a monitor token (only where the "
        "network lets nobody else reach the events API)",
    )
    events_rate: float = Field(
        1000.0, gt=0, description="events per second one monitor may report, on average"
    )
    events_burst: int = Field(
        10_000, ge=1, description="events one monitor may report at once (a storm)"
    )
    front_loop: Literal["auto", "on", "off", "process"] = Field(
        "auto",
        description="serve HTTP, and take events in, on an event loop of its own thread "
        "(on), or in a process of its own (process: SQLite and the in-process bus only), "
        "so that a storm's delivery never delays the next events; auto: where this "
        "process also handles or delivers them, a process in embedded mode, else a thread",
    )
    # Before monitor_tokens: one token for every monitor (the monitor "southbound").
    southbound_token: SecretStr | None = None

    @model_validator(mode="after")
    def _keystone_has_a_url(self) -> ApiSettings:
        if self.auth_mode == "keystone" and not self.keystone.auth_url:
            raise ValueError('auth_mode = "keystone" needs api.keystone.auth_url')
        return self

    @model_validator(mode="after")
    def _headers_only_from_a_named_proxy(self) -> ApiSettings:
        open_headers = self.auth_mode == "trusted-headers" and not self.trusted_proxies
        if open_headers and not is_loopback(self.host):
            raise ValueError(
                f"api.host {self.host} listens beyond loopback, where anyone could "
                "send X-Roles: admin: name the proxy in api.trusted_proxies, or use "
                'auth_mode = "token"'
            )
        return self


# The host prober's beat (see monitor/hostprobe.py), chosen with `opendoctor bench
# detect`: the fastest that raised no false "host down" in 180 s soaks at 1 % and 5 %
# loss per path under a load of 4-8 on 2 cores, once the lab's hosts answered from a
# real-time thread. Two paths: down after 3 misses on both (~35 ms); one path (a cut
# link, or a host without an alt address): after 6 (docs/configuration.md).
PROBE_INTERVAL = 0.01
PROBE_MISSES = 3
MIN_PROBE_INTERVAL = 0.01


class MonitorSettings(BaseModel):
    enabled: bool = True
    token: SecretStr | None = Field(
        None,
        description="what a standalone monitor (`opendoctor monitor --api`) sends as "
        "X-Auth-Token; set it from the environment (OPENDOCTOR_MONITOR__TOKEN)",
    )
    interval: float = Field(
        PROBE_INTERVAL,
        description=f"seconds between heartbeat probes (at least {MIN_PROBE_INTERVAL})",
    )
    misses: int = Field(
        PROBE_MISSES,
        ge=1,
        le=100,
        description="consecutive probes unanswered past their deadline that make a fault",
    )
    lease: str | None = Field(
        None,
        description="standalone monitors sharing this lease name (in the database) elect "
        "one of them to probe; the others wait to take over",
    )
    lease_ttl: float = Field(3.0, gt=0, description="seconds a leader's lease lasts unrenewed")

    @field_validator("interval")
    @classmethod
    def _fast_but_not_too_fast(cls, value: float) -> float:
        if not value >= MIN_PROBE_INTERVAL:  # also refuses NaN
            raise ValueError(
                f"monitor.interval must be at least {MIN_PROBE_INTERVAL} s (10 ms), got "
                f"{value}: a Python prober cannot keep a faster beat, and no real "
                "network's jitter is below it"
            )
        return value


class InspectorSettings(BaseModel):
    vim_concurrency: int = Field(
        32,
        ge=1,
        description="parallel VIM requests setting faults' servers to error, all faults "
        "together (one request per fault where the VIM takes a batch)",
    )
    topology_file: Path | None = Field(
        None, description="YAML file of what the VIM does not know: switches, racks, feeds"
    )
    default_templates: bool = Field(
        True, description="load the built-in rule templates (host down, switch down, ...)"
    )
    templates_dir: Path | None = Field(
        None, description="directory of extra rule templates (*.yaml) to load at start"
    )
    template_sync_interval: float = Field(
        2.0,
        gt=0,
        description="scaled out: seconds between take-ups of the templates other "
        "inspectors stored through their API",
    )
    fault_sync_interval: float = Field(
        1.0,
        gt=0,
        description="scaled out: seconds between readings of the other partitions' "
        "active faults, which each inspector (and each api process) mirrors in its graph",
    )
    topology_sync_interval: float = Field(
        2.0,
        gt=0,
        description="scaled out: seconds between take-ups of the topology changes other "
        "processes took through their API",
    )
    consistency_interval: float = Field(
        300.0,
        ge=0,
        description="seconds between full re-reads of the VIM that drop stale entities (0: off)",
    )
    template_check_seconds: float = Field(
        10.0,
        gt=0,
        description="most time checking a template sent to the API may take; a longer "
        "check is a 422",
    )
    hold_down: float = Field(
        10.0,
        ge=0,
        description="seconds a resource must stay up before its fault clears; down again "
        "before that, it keeps the fault (nothing is redone) and the next hold doubles "
        "(0: faults clear at once, no damping)",
    )
    hold_down_max: float = Field(
        300.0,
        ge=0,
        description="the longest hold-down; also how long a cleared fault's flaps are "
        "remembered for the resource's next fault",
    )


class NotifierSettings(BaseModel):
    timeout: float = Field(2.0, gt=0, description="seconds to wait for a consumer's answer")
    max_attempts: int = Field(12, ge=1)
    backoff_initial: float = Field(0.2, gt=0)
    backoff_max: float = Field(30.0, gt=0)
    connections: int = Field(256, ge=1)
    signing_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="project -> the key its callbacks are signed with (X-OpenDoctor-Signature)",
    )
    signing_keys_file: Path | None = Field(
        None, description="a file of `project key` lines, more signing keys; mode 600"
    )
    max_alarms_per_project: int = Field(
        1000, ge=1, description="alarms one project may have; creating more is a 403"
    )
    per_project: int = Field(
        64,
        ge=1,
        description="most concurrent deliveries for one project's alarms, whatever their "
        "consumers, so that one tenant cannot take every connection",
    )
    infrastructure_projects: list[str] = Field(
        default_factory=lambda: ["admin"],
        description="projects whose alarms may fire on notifications that name no project "
        "(switches, ports, topology-file entities); other projects hear only of their own "
        "resources",
    )
    per_destination: int = Field(
        32,
        ge=1,
        description="most concurrent deliveries to one consumer (scheme, host and port), "
        "so that one tenant's slow consumer cannot take every connection",
    )
    sync_interval: float = Field(
        0.5, gt=0, description="seconds between take-ups of other processes' alarm changes"
    )
    egress_allow: AllowList = Field(
        default_factory=list,
        description="addresses or networks, each with an optional port (127.0.0.1:5001, "
        "10.20.0.0/16, [::1]:5001), that alarm actions may reach although they are not "
        "globally routable (loopback, private, link-local: refused by default)",
    )
    first_attempt_wait: float = Field(
        0.5,
        gt=0,
        description="seconds a fault's handling waits for the owners' first attempts before "
        "it goes on (servers to error, the next event); a slower answer is recorded when "
        "it comes, so one tenant's slow consumer delays nobody else by more",
    )
    max_response_bytes: int = Field(
        65_536, gt=0, description="most of a consumer's answer read; the rest is dropped"
    )

    def egress(self) -> EgressPolicy:
        return EgressPolicy.of(self.egress_allow)

    def signing(self) -> dict[str, bytes]:
        """Every project's signing key; raises `SecretFileError` for a bad keys file."""
        keys = {p: k.get_secret_value().encode() for p, k in self.signing_keys.items()}
        if self.signing_keys_file is not None:
            found = read_secret_file(self.signing_keys_file, "signing keys file")
            keys.update({p: k.encode() for p, k in found.items()})
        return keys


class BusSettings(BaseModel):
    kind: Literal["memory", "amqp"] = Field(
        "memory", description="memory: embedded, one process; amqp: RabbitMQ (scaled out)"
    )
    url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="the RabbitMQ broker")
    prefix: str = Field("opendoctor", description="names of exchanges and queues start with it")
    partitions: int = Field(8, ge=1, le=1024, description="queues per topic; same everywhere")
    workers: int = Field(
        128,
        ge=1,
        le=4096,
        description="messages of different keys (hosts) handled at once per topic, each "
        "key's in order; amqp: spread over the partitions (each one's prefetch is "
        "workers / partitions, rounded up)",
    )
    consume: list[int] | None = Field(None, description="partitions this process consumes")
    retry_delay: float = Field(1.0, gt=0, description="seconds before a failed message again")
    max_attempts: int = Field(10, ge=1, description="attempts before a message is dead-lettered")
    publish_timeout: float = Field(30.0, gt=0, description="seconds to retry an unreachable broker")
    reconnect_interval: float = Field(1.0, gt=0, description="seconds between reconnections")
    standby_after: float | None = Field(
        2.0,
        ge=0,
        description="with `consume` set: seconds after which this process also subscribes to "
        "the other partitions, as a standby the broker switches to when their consumer dies "
        "(null: never)",
    )
    presence_ttl: float = Field(
        3.0,
        gt=0,
        description="with `consume` set: seconds a claim on this process's partitions lasts "
        "unless renewed (every third of it); a replica that comes back gets its partitions "
        "back from the standbys within about a third of it",
    )


Role = Literal["api", "inspector", "notifier", "monitor"]
ROLES: tuple[Role, ...] = ("api", "inspector", "notifier", "monitor")


class OpenStackSettings(BaseModel):
    """Nova through openstacksdk (`vim.driver = "openstack"`, docs/openstack.md)."""

    cloud: str | None = Field(
        None, description="the clouds.yaml entry; default: OS_CLOUD, else the OS_* variables"
    )
    region: str | None = None
    compute_microversion: str = Field(
        "2.53", pattern=r"^2\.\d{1,3}$", description="at least 2.53 (forced_down by service id)"
    )
    heartbeat_port: int = Field(
        4100, ge=1, le=65535, description="the UDP port the hosts' heartbeat responders use"
    )
    poll_interval: float = Field(
        5.0, gt=0, description="seconds between polls of Nova for changed servers and services"
    )
    workers: int = Field(8, ge=1, le=64, description="Nova calls at once (a thread each)")
    action_timeout: float = Field(
        300.0, gt=0, le=3600, description="seconds an evacuation may take in Nova before it fails"
    )
    notifications_url: SecretStr | None = Field(
        None,
        description="Nova's RabbitMQ (its transport_url), to follow its versioned "
        "notifications; polling stays as the fallback",
    )
    notifications_exchange: str = Field("nova", description="Nova's control_exchange")


class MasakariSettings(BaseModel):
    """The Masakari-compatible API (`/instance-ha/v1`): failover segments, their hosts,
    and the notifications masakari-monitors post."""

    duplicate_window: float = Field(
        180.0,
        ge=0,
        le=86_400,
        description="seconds within which a notification of the same type, host and "
        "payload is a duplicate (409), as Masakari's "
        "duplicate_notification_detection_interval",
    )
    expire_after: float = Field(
        86_400.0,
        gt=0,
        description="seconds after which a notification still new or running is failed, "
        "as Masakari's notifications_expired_interval",
    )


class VimSettings(BaseModel):
    driver: Literal["lab", "openstack"] = "lab"
    lab_url: str | None = Field(None, description="lab API URL; default: read from the lab dir")
    lab_dir: Path | None = None
    openstack: OpenStackSettings = Field(default_factory=OpenStackSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OPENDOCTOR_", env_nested_delimiter="__", extra="forbid"
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "text"
    api: ApiSettings = Field(default_factory=ApiSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    inspector: InspectorSettings = Field(default_factory=InspectorSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    vim: VimSettings = Field(default_factory=VimSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    masakari: MasakariSettings = Field(default_factory=MasakariSettings)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    # Server-group messaging through the hosts (docs/server-groups.md).
    guestlink: GuestLinkSettings = Field(default_factory=GuestLinkSettings)
    # The tools operators already run (Alertmanager, Zabbix, collectd, a queue); `monitor`
    # above is opendoctor's own host prober.
    monitors: MonitorsSettings = Field(default_factory=MonitorsSettings)
    roles: list[Role] = Field(
        default_factory=lambda: list(ROLES),
        min_length=1,
        description="the blocks this process runs; split roles need the amqp bus",
    )

    @model_validator(mode="after")
    def _split_roles_need_a_bus(self) -> Settings:
        if set(self.roles) != set(ROLES) and self.bus.kind == "memory":
            raise ValueError(
                f"roles {', '.join(self.roles)} without the others need the other processes: "
                "set bus.kind = amqp (and a database_url all processes share)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which overrides the defaults.
        return (env_settings, init_settings)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir / 'opendoctor.db'}"

    @property
    def lab_dir(self) -> Path:
        return self.vim.lab_dir or self.state_dir / "lab"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional TOML file plus keyword overrides, under the environment."""
    data: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    data.update(overrides)
    return Settings(**data)
