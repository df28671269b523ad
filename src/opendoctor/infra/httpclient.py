"""The one place opendoctor's HTTP client (aiohttp) lives.

Callbacks, the lab VIM driver, monitors that post to the API, the demo and the
benchmarks all go through `HttpClient`, so connection pooling, timeouts and JSON
encoding are decided once.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from opendoctor.core.egress import EgressDenied, EgressPolicy
from opendoctor.infra.memo import Remembered

# Seconds an idle pooled connection is kept: connections kept between faults spare a
# storm's callbacks their handshakes. A server that closes idle connections sooner
# fails a request that reuses one as it closes, so our API's server keeps them longer
# (`app.front.KEEP_ALIVE`).
KEEPALIVE = 15.0


class HttpError(Exception):
    """The request did not get an HTTP answer (refused, reset, timed out)."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    # Names in lower case (some APIs answer in a header: Keystone's X-Subject-Token).
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Requester(Protocol):
    """What callers need of an HTTP client: `HttpClient`, or `infra.http1.Http1Client`
    where requests come by the thousand (callbacks, the lab's VIM calls)."""

    async def request(
        self,
        method: str,
        url: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        content: bytes | None = None,
    ) -> Response: ...


class EgressRefused(HttpError):
    """The egress policy does not allow the address the URL leads to."""


class _PolicyResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses the policy allows: the connection
    goes to an address that was checked, whatever the name answers next time."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        allowed = set(self._policy.allowed(host, [r["host"] for r in found], port))
        return [r for r in found if r["host"] in allowed]

    async def close(self) -> None:
        await self._resolver.close()


class HttpClient:
    """A pooled async HTTP client. Create it inside a running event loop.

    With `egress`, it calls on a user's behalf (alarm callbacks): only addresses the
    policy allows, no redirects (each hop would need the same check, and a POST must not
    turn into a GET elsewhere), and at most `max_response_bytes` of each answer."""

    def __init__(
        self,
        timeout: float = 5.0,
        connections: int = 256,
        egress: EgressPolicy | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._egress = egress
        self._max_response = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        # The egress policy's verdict on a URL's literal address, once per URL (the
        # policy is fixed for a client's life): a fault's thousand callbacks go to a
        # handful of consumers.
        self._url_problem = Remembered(egress.url_problem) if egress is not None else None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=KEEPALIVE,
                resolver=_PolicyResolver(self._egress) if self._egress is not None else None,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=_dumps
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        content: bytes | None = None,
    ) -> Response:
        """`json` is encoded here; `content` is sent as it is (already encoded JSON, say)."""
        session = self._get_session()
        data = content
        hdrs = headers  # not copied: aiohttp merges it into a request's own headers
        if json is not None:
            data = orjson.dumps(json)
            hdrs = dict(headers or {})
            hdrs.setdefault("content-type", "application/json")
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = self._timeout_of(timeout)
        if self._url_problem is not None:
            # Literal addresses never reach the resolver.
            problem = self._url_problem(url)
            if problem is not None:
                raise EgressRefused(f"{method} {url}: {problem}")
            kwargs["allow_redirects"] = False
        try:
            async with session.request(method, url, data=data, headers=hdrs, **kwargs) as resp:
                answered = {k.lower(): v for k, v in resp.headers.items()}
                limit = self._max_response
                length = resp.content_length
                if limit is None or (length is not None and length <= limit):
                    return Response(resp.status, await resp.read(), answered)
                body = await _read_at_most(resp, limit)
                return Response(resp.status, body, answered)
        except EgressDenied as exc:
            raise EgressRefused(f"{method} {url}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise HttpError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc

    def _timeout_of(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def get(self, url: str, **kw: Any) -> Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, json: Any = None, **kw: Any) -> Response:
        return await self.request("POST", url, json=json, **kw)

    async def put(self, url: str, json: Any = None, **kw: Any) -> Response:
        return await self.request("PUT", url, json=json, **kw)

    async def delete(self, url: str, **kw: Any) -> Response:
        return await self.request("DELETE", url, **kw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of the body; the rest is not read (the connection closes)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(limit):
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            resp.close()
            break
    return bytes(body)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
