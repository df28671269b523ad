"""From another tool's alerts to events: the part every adapter shares.

An adapter reads its tool's format into `Alert`s (named fields, firing or not, the
tool's own id for the alert). `Mapper` applies the operator's rules
(`core.monitor_settings`): which alerts are faults, of which type, about which host or
server; `Holds` keeps what fires, so that one alert resolving does not clear a resource
another still holds down.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from opendoctor.core.model import (
    HOST_UNREACHABLE,
    INSTANCE_EVENTS,
    Event,
    Host,
    Server,
    resource_key,
)
from opendoctor.core.monitor_settings import IGNORE, AdapterSettings, Rule


@dataclass(slots=True)
class Alert:
    """One alert as its tool reported it."""

    source: str  # the adapter: alertmanager, zabbix, collectd
    # The tool's id of the alert, the same when it fires and when it resolves.
    source_id: str
    fields: dict[str, str]
    active: bool
    at: float  # when the tool says it began (or ended), epoch seconds
    where: str  # its place in the request, e.g. alerts[2], for the answer
    summary: str = ""
    rule: Rule | None = None  # decided by the adapter (a threshold), not by the rules


@dataclass(slots=True, frozen=True)
class Skipped:
    """An alert that made no event, and why (the answer lists them)."""

    where: str
    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"alert": self.where, "field": self.field, "problem": self.problem}


def matches(match: Mapping[str, str | list[str]], fields: Mapping[str, str]) -> bool:
    """Whether every named field is present and fits one of its patterns."""
    for name, patterns in match.items():
        value = fields.get(name)
        if value is None:
            return False
        options = [patterns] if isinstance(patterns, str) else patterns
        if not any(fnmatchcase(value, p) for p in options):
            return False
    return True


def _without_port(value: str) -> str:
    if value.startswith("["):  # [v6]:port
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.rsplit(":", 1)[0]
    return value


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class HostNames:
    """A tool's name for a host as opendoctor's: renamed as configured, else itself,
    without its port, without its domain, or the host that has that address."""

    def __init__(self, hosts: Mapping[str, Host], renames: Mapping[str, str]) -> None:
        self.hosts = hosts
        self.renames = renames
        self._addresses: dict[str, str] | None = None

    def addresses(self) -> dict[str, str]:
        if self._addresses is None:  # built at the first address seen, once a request
            found: dict[str, str] = {}
            for host in self.hosts.values():
                found[host.address] = host.name
                if host.alt_address:
                    found[host.alt_address] = host.name
            self._addresses = found
        return self._addresses

    def resolve(self, value: str) -> str | None:
        bare = _without_port(value)
        for candidate in dict.fromkeys((value, bare)):
            renamed = self.renames.get(candidate)
            if renamed is not None:
                return renamed if renamed in self.hosts else None
            if candidate in self.hosts:
                return candidate
        if _is_address(bare):
            return self.addresses().get(bare)
        short = bare.split(".", 1)[0]
        return short if short in self.hosts else None


@dataclass(slots=True, frozen=True)
class Made:
    """What a firing alert made: an event of this type about this resource."""

    type: str
    hostname: str
    instance_id: str | None

    @property
    def key(self) -> tuple[str, str]:
        return resource_key(self.hostname, self.instance_id)


Mark = tuple[str, str]  # (adapter, the tool's id of the alert)


class Holds:
    """Which alerts hold each resource down, and what each made.

    An alert that resolves clears what it made, whatever the rules say by then (a
    collectd OKAY has another summary than its FAILURE), and only once no other alert
    holds the resource. Kept in memory, bounded by `limit` alerts (the resources held
    longest ago go first): after a restart, or past the bound, a resolved alert is
    mapped by the rules and clears as if it were the only one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: OrderedDict[tuple[str, str], set[Mark]] = OrderedDict()
        self._made: dict[Mark, Made] = {}

    def __len__(self) -> int:
        return len(self._made)

    def made_by(self, mark: Mark) -> Made | None:
        return self._made.get(mark)

    def holding(self, key: tuple[str, str]) -> set[Mark]:
        """The alerts that hold the resource `key` down."""
        return set(self._held.get(key, ()))

    def hold(self, mark: Mark, made: Made) -> None:
        before = self._made.get(mark)
        if before is not None and before.key != made.key:
            self.release(mark, before)
        self._made[mark] = made
        self._held.setdefault(made.key, set()).add(mark)
        self._held.move_to_end(made.key)
        while len(self._made) > self.limit:
            oldest = next(iter(self._held))
            marks = self._held[oldest]
            self._made.pop(marks.pop(), None)
            if not marks:
                del self._held[oldest]

    def release(self, mark: Mark, made: Made) -> int:
        """Forget the alert; how many others still hold its resource."""
        self._made.pop(mark, None)
        held = self._held.get(made.key)
        if held is None:
            return 0
        held.discard(mark)
        if not held:
            del self._held[made.key]
        return len(held)


@dataclass(slots=True)
class Mapped:
    events: list[Event] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class Mapper:
    """Alerts to events by one adapter's rules, against the resources opendoctor knows."""

    def __init__(self, rules: AdapterSettings, holds: Holds) -> None:
        self.rules = rules
        self.holds = holds

    def rule_for(self, alert: Alert) -> Rule | None:
        if alert.rule is not None:
            return alert.rule
        return next((r for r in self.rules.rules if matches(r.match, alert.fields)), None)

    def map(
        self,
        alerts: list[Alert],
        hosts: Mapping[str, Host],
        servers: Mapping[str, Server],
        reporter: str,
    ) -> Mapped:
        """Events for the alerts that are faults (or their end); the rest skipped.

        Firing alerts first: a group that resolves one alert of a host while another
        still fires (Alertmanager sends both) leaves the host down, even when nothing
        was held before (after a restart). Holding is idempotent, so a request sent
        again (after a 429 or a 503) maps the same."""
        out = Mapped()
        names = HostNames(hosts, self.rules.hosts)
        for alert in sorted(alerts, key=lambda a: not a.active):
            found = self._one(alert, names, servers, reporter)
            if isinstance(found, Skipped):
                out.skipped.append(found)
            else:
                out.events.append(found)
        return out

    def _one(
        self, alert: Alert, names: HostNames, servers: Mapping[str, Server], reporter: str
    ) -> Event | Skipped:
        mark = (alert.source, alert.source_id)
        made = None if alert.active else self.holds.made_by(mark)
        if made is None:
            found = self._made(alert, names, servers)
            if isinstance(found, Skipped):
                return found
            made = found
        if alert.active:
            self.holds.hold(mark, made)
        elif others := self.holds.release(mark, made):
            return Skipped(alert.where, "status", f"resolved, but {others} other alert(s) hold it")
        return self._event(alert, made, reporter)

    def _made(
        self, alert: Alert, names: HostNames, servers: Mapping[str, Server]
    ) -> Made | Skipped:
        rule = self.rule_for(alert)
        if rule is None or rule.type == IGNORE:
            why = "no rule makes it a fault" if rule is None else "a rule ignores it"
            return Skipped(alert.where, "rules", why)
        if rule.type in INSTANCE_EVENTS:
            server = self._server(alert, servers)
            if isinstance(server, Skipped):
                return server
            return Made(rule.type, server.host, server.id)
        host = self._host(alert, rule, names)
        if isinstance(host, Skipped):
            return host
        return Made(rule.type, host, None)

    def _host(self, alert: Alert, rule: Rule, names: HostNames) -> str | Skipped:
        wanted = [rule.host_field] if rule.host_field else self.rules.host_fields
        name = next((n for n in wanted if alert.fields.get(n)), None)
        if name is None:
            return Skipped(alert.where, wanted[0], f"no host named in {', '.join(wanted)}")
        hostname = names.resolve(alert.fields[name])
        if hostname is None:
            return Skipped(alert.where, name, f"no known host {alert.fields[name]!r}")
        return hostname

    def _server(self, alert: Alert, servers: Mapping[str, Server]) -> Server | Skipped:
        wanted = self.rules.server_fields
        name = next((n for n in wanted if alert.fields.get(n)), None)
        if name is None:
            return Skipped(alert.where, wanted[0], f"no server named in {', '.join(wanted)}")
        server = servers.get(alert.fields[name])
        if server is None:
            return Skipped(alert.where, name, f"no known server {alert.fields[name]!r}")
        return server

    def _event(self, alert: Alert, made: Made, reporter: str) -> Event:
        now = time.time()
        at = min(alert.at, now)
        details: dict[str, Any] = {"fields": alert.fields}
        if alert.summary:
            details["summary"] = alert.summary
        status = "unreachable" if made.type == HOST_UNREACHABLE else "down"
        return Event(
            type=made.type,
            hostname=made.hostname,
            status=status if alert.active else "up",
            time=at,
            monitor=alert.source,
            monitor_event_id=alert.source_id,
            details=details,
            instance_id=made.instance_id,
            reporter=reporter,
            received=now,
            trace={"T01": at},
        )
