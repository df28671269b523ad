"""Where opendoctor may call on a user's behalf: the egress policy.

Alarm actions (and, later, workflow HTTP tasks) are URLs that tenants give us. Called
blindly, they reach what only opendoctor can reach: the cloud's metadata service, the
VIM's or the lab's API on loopback, a database on a private network. So an address is
refused unless it is globally routable, or the operator allowed it (`allow`): an
address, a network, or either with one port (`127.0.0.1:5001`, `[::1]:5001`,
`10.20.0.0/16`). Hostnames are checked on the addresses they resolve to, at the moment
of the call (`infra.httpclient`), so a name that changes its answer gains nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges worth naming in a refusal; anything else not globally routable is "reserved".
_NAMED: tuple[tuple[str, Network], ...] = (
    ("a link-local address (cloud metadata answers there)", ipaddress.ip_network("169.254.0.0/16")),
    ("a link-local address", ipaddress.ip_network("fe80::/10")),
    ("a loopback address", ipaddress.ip_network("127.0.0.0/8")),
    ("a loopback address", ipaddress.ip_network("::1/128")),
    ("a private address", ipaddress.ip_network("10.0.0.0/8")),
    ("a private address", ipaddress.ip_network("172.16.0.0/12")),
    ("a private address", ipaddress.ip_network("192.168.0.0/16")),
    ("a unique local address", ipaddress.ip_network("fc00::/7")),
    ("a shared (carrier-grade NAT) address", ipaddress.ip_network("100.64.0.0/10")),
    ("an unspecified address", ipaddress.ip_network("0.0.0.0/8")),
    ("an unspecified address", ipaddress.ip_network("::/128")),
)


# The port a URL without one calls, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}


def endpoint(url: str) -> tuple[str, int]:
    """The host and port a URL calls ("" when it names no host)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 80)


def address_of(url: str) -> str:
    """`host:port` of a URL, as an allow entry (`parse_allowed`) takes it."""
    host, port = endpoint(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EgressDenied(Exception):
    """A call the egress policy does not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class Allowed:
    network: Network
    port: int | None = None

    def covers(self, address: Address, port: int) -> bool:
        return address in self.network and (self.port is None or self.port == port)


def parse_allowed(entry: str) -> Allowed:
    """`10.0.0.0/8`, `192.0.2.7`, `127.0.0.1:5001`, `[::1]:5001`, `fd00::/8`."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not [IPv6 address]:port")
        text, port_text = host, rest[1:]
        port = _port(entry, port_text) if rest else None
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = _port(entry, port_text)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not an address or a network") from None
    return Allowed(network, port)


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: {text!r} is not a port")
    return int(text)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow: tuple[Allowed, ...] = ()

    @classmethod
    def of(cls, entries: list[str]) -> EgressPolicy:
        return cls(tuple(parse_allowed(e) for e in entries))

    def problem(self, address: str, port: int) -> str | None:
        """Why calling `address:port` is refused, or None when it is allowed."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(a.covers(ip, port) for a in self.allow):
            return None
        if ip.is_multicast:
            return f"{ip} is a multicast address"
        if ip.is_global:
            return None
        kind = next((name for name, net in _NAMED if ip in net), "a reserved address")
        return (
            f"{ip} is {kind}, which opendoctor does not call on a user's behalf "
            "(an operator may allow it: notifier.egress_allow)"
        )

    def allowed(self, host: str, addresses: list[str], port: int) -> list[str]:
        """Those of `addresses` (what `host` resolved to) that may be called on `port`;
        `EgressDenied`, naming why the first was refused, when none may."""
        kept = [a for a in addresses if self.problem(a, port) is None]
        if not kept:
            problem = self.problem(addresses[0], port) if addresses else "no address"
            raise EgressDenied(f"{host}: {problem}")
        return kept

    def url_problem(self, url: str) -> str | None:
        """What can be told of a URL before calling it: a literal address that is refused,
        or a name that can only mean this machine. Other names are checked at call time."""
        host, port = endpoint(url)
        host = host.rstrip(".").lower()
        if not host:
            return None
        if host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return self.problem(host, port)


def checked_allow_list(entries: list[str]) -> list[str]:
    """`entries` if each is an allowed destination; `ValueError` naming the first that
    is not (the settings' `egress_allow` validators)."""
    for entry in entries:
        parse_allowed(entry)
    return entries


# A settings field of allowed destinations, each checked as the settings load.
AllowList = Annotated[list[str], AfterValidator(checked_allow_list)]
