"""A lean HTTP/1.1 client for alarm callbacks, the one request the hot path makes.

A storm sends ten thousand POSTs to a handful of consumers, all from the service's one
event loop. aiohttp spends about 140 µs of CPU on each; this client about 45 µs
(`opendoctor bench storm` prints the difference as delivery ÷ floor). It does less:
one asyncio protocol per connection, httptools (the C parser uvicorn serves with) for
the answer, the request line and fixed headers built once per URL, and connections
kept per consumer and reused, newest first.

It keeps what `infra.httpclient.HttpClient` promises for calls made on a user's behalf:

* the egress policy: a literal address is judged once per URL; a name is resolved when
  a connection is opened and only an allowed address is connected to;
* no redirects: a 3xx is returned as it came;
* at most `max_response_bytes` of an answer; past that the connection is closed;
* one timeout for the whole request (connect, send, answer); on expiry the connection
  is dropped, since its answer may still come;
* https with the system's trust store and the host name checked;
* `user:password@` in a URL sent as Basic authorisation, never logged.

A kept connection the server closed just as it was reused fails before any byte of an
answer. An idempotent request (GET, PUT, DELETE) is then sent once more on a new
connection; so is any other where the client was made with `resend_unanswered` (the
callbacks: consumers tell repeats apart by `x-openstack-request-id`, and delivery is at
least once anyway). Elsewhere the server may have acted on the request before it closed,
so the caller hears of it (`HttpError`) rather than have it done twice.

Not supported: HEAD (the parser would wait for a body), request bodies in chunks,
compression, cookies, proxies. Concurrency is the caller's to bound: the notifier's
dispatcher holds callbacks to `notifier.connections`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools
import orjson

from opendoctor.core.egress import DEFAULT_PORTS, EgressDenied, EgressPolicy
from opendoctor.infra.httpclient import KEEPALIVE, EgressRefused, HttpError, Response
from opendoctor.infra.memo import Remembered

# Most bytes of header lines taken from one answer: a consumer is a stranger, and a
# stream of headers would otherwise grow until the timeout.
MAX_HEADER_BYTES = 64 * 1024

# Methods a server may be asked twice without doing anything twice.
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "OPTIONS"})

# What may stay as it is in a request target (RFC 3986 path and query characters, and
# `%` so that escapes already made are kept); anything else (spaces, CR/LF, non-ASCII)
# is escaped, so a URL cannot add a header line.
_SAFE = "/?:@!$&'()*+,;=%"


class _Stale(Exception):
    """A kept connection ended before any byte of the answer."""


@dataclass(frozen=True, slots=True)
class _Target:
    """What a method and URL lead to, worked out once."""

    key: tuple[str, str, int]  # scheme, host, port: the connections that may serve it
    host: str
    port: int
    tls: bool
    literal: bool  # the host is an IP address: nothing to resolve
    head: bytes  # request line, Host and any Authorization header
    problem: str | None  # the egress policy's refusal of a literal address
    resend: bool  # sent once more when a kept connection ends before any answer


def _target(method: str, url: str, egress: EgressPolicy | None, resend: bool) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise HttpError(f"{method} {url}: not an http or https URL")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise HttpError(f"{method} {url}: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise HttpError(f"{method} {url}: no host")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    shown = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        shown = f"{shown}:{port}"
    target = quote(parts.path or "/", safe=_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_SAFE)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {quote(shown, safe='[]:')}"]
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(pair.encode()).decode())
    problem = egress.url_problem(url) if egress is not None else None
    return _Target(
        (scheme, host, port),
        host,
        port,
        scheme == "https",
        literal,
        ("\r\n".join(lines) + "\r\n").encode(),
        problem,
        resend or method in IDEMPOTENT,
    )


def _header_lines(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r}: a line break in a header")
        out += f"{name}: {value}\r\n".encode("latin-1")
    return bytes(out)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, its answer parsed as it comes."""

    def __init__(self, limit: int | None, gone: set[_Connection]) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._limit = limit
        self._gone = gone  # the client's set of open connections, left on close
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._body = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._refusal: str | None = None  # why this client stopped reading an answer
        self._answered = False  # a byte of this request's answer came
        self._complete_headers = False
        self.reusable = True
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio's, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._gone.add(self)

    def exchange(self, data: bytes) -> asyncio.Future[Response]:
        """Send one request; the future is its answer."""
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._answered = self._complete_headers = False
        self._header_bytes = 0
        self._transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # talk nobody asked for: not a connection to reuse
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(self._refusal or f"unreadable answer: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            # Raised inside the parser, which stops there and says only that a callback
            # failed: the reason is kept for `data_received` to give.
            self._refusal = f"more than {MAX_HEADER_BYTES} bytes of headers"
            raise HttpError(self._refusal)
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._complete_headers = True

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:
            return
        self._body += body
        if self._limit is not None and len(self._body) >= self._limit:
            # Enough read: the rest is left unread, so the connection cannot be reused.
            del self._body[self._limit :]
            self.reusable = False
            self._finish()
            self.close()

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._headers = {}  # an interim answer: the real one follows
            self._complete_headers = False
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._finish()

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        body, self._body = bytes(self._body), bytearray()
        headers, self._headers = self._headers, {}
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), body, headers))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._gone.discard(self)
        if self._waiter is None:
            return
        if self._complete_headers:
            # An answer delimited by the connection's end (or cut short): its status
            # is what a callback needs.
            self._finish()
        elif not self._answered:
            self._fail(_Stale())
        else:
            self._fail(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()


class Http1Client:
    """Pooled HTTP/1.1 requests under the egress policy. Create it in a running loop."""

    def __init__(
        self,
        timeout: float = 5.0,
        connections: int = 256,
        egress: EgressPolicy | None = None,
        max_response_bytes: int | None = None,
        resend_unanswered: bool = False,
    ) -> None:
        self._timeout = timeout
        self._most_idle = connections
        self._egress = egress
        self._limit = max_response_bytes
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._targets: Remembered[tuple[str, str], _Target] = Remembered(
            lambda key: _target(key[0], key[1], egress, resend_unanswered)
        )
        self._tls: ssl.SSLContext | None = None
        self._swept = time.monotonic()

    async def request(
        self,
        method: str,
        url: str,
        json: object = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        content: bytes | None = None,
    ) -> Response:
        """As `HttpClient.request`: `json` is encoded here, `content` sent as it is."""
        if method.upper() == "HEAD":
            raise ValueError("HEAD is not supported by this client")
        target = self._targets((method.upper(), url))
        if target.problem is not None:
            raise EgressRefused(f"{method} {url}: {target.problem}")
        body = content or b""
        extra = headers or {}
        if json is not None:
            body = orjson.dumps(json)
            extra = {"content-type": "application/json", **extra}
        data = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            target.head,
            _header_lines(extra),
            len(body),
            body,
        )
        seconds = self._timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await self._exchange(target, data)
        except TimeoutError:
            raise HttpError(f"{method} {url}: no answer within {seconds:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
        except HttpError as exc:
            if isinstance(exc, EgressRefused):
                raise EgressRefused(f"{method} {url}: {exc}") from None
            raise HttpError(f"{method} {url}: {exc}") from None

    async def _exchange(self, target: _Target, data: bytes) -> Response:
        conn = self._take(target.key)
        if conn is not None:
            try:
                return await self._over(conn, target, data)
            except _Stale:
                if not target.resend:
                    raise HttpError("the server closed the connection without answering") from None
                # Closed by the server as we reused it: once more, on a new one.
        conn = await self._connect(target)
        try:
            return await self._over(conn, target, data)
        except _Stale:
            raise HttpError("the server closed the connection without answering") from None

    async def _over(self, conn: _Connection, target: _Target, data: bytes) -> Response:
        try:
            response = await conn.exchange(data)
        except BaseException:
            conn.close()  # cancelled, timed out or failed: its answer must not be read later
            raise
        if conn.reusable and not conn.closed:
            self._keep(target.key, conn)
        else:
            conn.close()
        return response

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        fresh_after = time.monotonic() - KEEPALIVE
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > fresh_after:
                return conn
            conn.close()
        return None

    def _keep(self, key: tuple[str, str, int], conn: _Connection) -> None:
        now = time.monotonic()
        conn.idle_since = now
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._most_idle:
            conn.close()
            return
        idle.append(conn)
        if now - self._swept > KEEPALIVE:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close what has been idle too long: the server is about to close it anyway."""
        self._swept = now
        for key, idle in list(self._idle.items()):
            kept = []
            for conn in idle:
                if not conn.closed and conn.idle_since > now - KEEPALIVE:
                    kept.append(conn)
                else:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if target.tls else None
        last: Exception | None = None
        for address in await self._addresses(target):
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._limit, self._open),
                    address,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
            except OSError as exc:
                last = exc
                continue
            return conn
        assert last is not None
        raise last

    async def _addresses(self, target: _Target) -> list[str]:
        """Where to connect: the literal address, or those the name resolves to that the
        policy allows (checked now, so a name that changes its answer gains nothing)."""
        if target.literal:
            return [target.host]
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        if self._egress is None:
            return addresses
        try:
            return self._egress.allowed(target.host, addresses, target.port)
        except EgressDenied as exc:
            raise EgressRefused(str(exc)) from None

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
