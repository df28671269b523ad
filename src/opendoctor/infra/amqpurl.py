"""AMQP URLs: a broker, an alarm action (where to publish), what a consumer binds.

Plain parsing and checking, with error messages that name the problem; no AMQP client
here (that is `opendoctor.infra.amqp`), so the API can validate alarm actions without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEMES = {"amqp": 5672, "amqps": 5671}
MAX_NAME = 255  # AMQP short strings: exchange and queue names, routing keys


class AmqpError(Exception):
    """A broker operation failed. `permanent`: trying again will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where a broker is: `amqp[s]://user:password@host:port/vhost` (vhost `/` by default)."""

    scheme: str
    host: str
    port: int
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"

    @property
    def url(self) -> str:
        """The URL with credentials, for the client library."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"
        return f"{self.scheme}://{auth}{self._where()}"

    @property
    def safe(self) -> str:
        """The URL without the password: for logs and error messages."""
        return f"{self.scheme}://{quote(self.user, safe='')}@{self._where()}"

    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"{host}:{self.port}/{vhost}"

    def __str__(self) -> str:
        return self.safe


@dataclass(frozen=True, slots=True)
class Target:
    """An exchange on a broker and a routing key (or, to listen, a binding key and a queue)."""

    broker: BrokerUrl
    exchange: str
    routing_key: str
    queue: str | None = None


def _split(url: str, what: str) -> tuple[BrokerUrl, dict[str, str]]:
    if any(c.isspace() for c in url):
        raise ValueError(f"{what} {url!r} contains whitespace")
    if "#" in url:
        raise ValueError(
            f"{what} {url!r}: '#' starts a URL fragment; write the wildcard '#' as %23"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{what} {url!r}: the scheme must be amqp or amqps")
    if not parts.hostname:
        raise ValueError(f"{what} {url!r} has no host")
    path = parts.path
    if path.count("/") > 1:
        raise ValueError(
            f"{what} {url!r}: the path is the virtual host, one segment "
            "(write a '/' inside a vhost name as %2F)"
        )
    vhost = unquote(path[1:]) or "/"
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name in params:
            raise ValueError(f"{what} {url!r}: query parameter {name!r} is given twice")
        params[name] = value
    broker = BrokerUrl(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or SCHEMES[parts.scheme],
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
    )
    return broker, params


def _only(url: str, what: str, params: dict[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"{what} {url!r}: unknown query parameter {unknown[0]!r} "
            f"(allowed: {', '.join(allowed) or 'none'})"
        )


def check_exchange(name: str) -> str:
    """A named exchange we may declare: not the default one, not a reserved `amq.` name."""
    if not name:
        raise ValueError("the exchange name is missing (add ?exchange=NAME)")
    if len(name.encode()) > MAX_NAME:
        raise ValueError(f"the exchange name is longer than {MAX_NAME} bytes")
    if name.startswith("amq."):
        raise ValueError(f"exchange {name!r}: names starting with 'amq.' are reserved by AMQP")
    bad = [c for c in name if not (c.isalnum() or c in "-_.:")]
    if bad:
        raise ValueError(
            f"exchange {name!r}: character {bad[0]!r} is not allowed "
            "(use letters, digits, '-', '_', '.', ':')"
        )
    return name


def check_routing_key(key: str, *, binding: bool = False) -> str:
    if len(key.encode()) > MAX_NAME:
        raise ValueError(f"the routing key is longer than {MAX_NAME} bytes")
    if not binding and ("*" in key or "#" in key):
        raise ValueError(
            f"routing key {key!r}: '*' and '#' are wildcards of binding keys; a message is "
            "published with a plain key such as 'opendoctor.alarm.project-a'"
        )
    return key


def parse_broker_url(url: str, what: str = "broker URL") -> BrokerUrl:
    """`amqp[s]://user:password@host[:port][/vhost]`, no query parameters."""
    broker, params = _split(url, what)
    _only(url, what, params, ())
    return broker


def parse_action_url(url: str) -> Target:
    """An alarm action: `amqp[s]://user:pass@host[:port]/[vhost]?exchange=X&routing_key=K`."""
    what = "AMQP action"
    broker, params = _split(url, what)
    _only(url, what, params, ("exchange", "routing_key"))
    try:
        exchange = check_exchange(params.get("exchange", ""))
        if "routing_key" not in params or not params["routing_key"]:
            raise ValueError("the routing key is missing (add &routing_key=KEY)")
        key = check_routing_key(params["routing_key"])
    except ValueError as exc:
        raise ValueError(f"{what} {url!r}: {exc}") from None
    return Target(broker, exchange, key)


def parse_listen_url(url: str, routing_key: str | None = None, queue: str | None = None) -> Target:
    """What a consumer listens on: `amqp[s]://…/[vhost]?exchange=X[&routing_key=K][&queue=Q]`.

    The routing key is a binding key (wildcards allowed; `#`, everything, by default).
    Without a queue name the consumer gets a private queue that goes away with it; with
    one, a durable queue that keeps what arrives while the consumer is down.
    """
    what = "AMQP listen URL"
    broker, params = _split(url, what)
    _only(url, what, params, ("exchange", "routing_key", "queue"))
    try:
        exchange = check_exchange(params.get("exchange", ""))
        key = check_routing_key(routing_key or params.get("routing_key") or "#", binding=True)
        name = queue or params.get("queue") or None
        if name is not None and (name.startswith("amq.") or len(name.encode()) > MAX_NAME):
            raise ValueError(f"queue {name!r}: not 'amq.…' and at most {MAX_NAME} bytes")
    except ValueError as exc:
        raise ValueError(f"{what} {url!r}: {exc}") from None
    return Target(broker, exchange, key, name)
