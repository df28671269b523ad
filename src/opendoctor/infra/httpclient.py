"""The one place opendoctor's HTTP client (aiohttp) lives.

Callbacks, the lab VIM driver, monitors that post to the API, the demo and the
benchmarks all go through `HttpClient`, so connection pooling, timeouts and JSON
encoding are decided once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

# Seconds an idle pooled connection is kept: connections kept between faults spare a
# storm's callbacks their handshakes. A server that closes idle connections sooner
# fails a request that reuses one as it closes, so our API's server keeps them longer
# (`app.server.KEEP_ALIVE`).
KEEPALIVE = 15.0


class HttpError(Exception):
    """The request did not get an HTTP answer (refused, reset, timed out)."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpClient:
    """A pooled async HTTP client. Create it inside a running event loop."""

    def __init__(self, timeout: float = 5.0, connections: int = 256) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=KEEPALIVE,
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
        hdrs = dict(headers or {})
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("content-type", "application/json")
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.request(method, url, data=data, headers=hdrs, **kwargs) as resp:
                return Response(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise HttpError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc

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


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
