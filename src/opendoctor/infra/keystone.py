"""Keystone, as opendoctor uses it: a token of its own service user, the validation of
the tokens callers send (with a cache), and its own entries in the catalog.

Validation asks Keystone once per token (`GET /v3/auth/tokens`, the token in
`X-Subject-Token`) and keeps the answer until the token expires or `cache_seconds` pass,
whichever is first; a token Keystone refused is remembered for a few seconds, so that
a client retrying a bad token does not make opendoctor hammer Keystone. Tokens are kept
only as their SHA-256 digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opendoctor.infra.httpclient import HttpClient, HttpError, Response

log = logging.getLogger(__name__)

REFUSED_FOR = 5.0  # seconds a refused token is remembered
RENEW_BEFORE = 60.0  # seconds before its expiry the service token is renewed


class KeystoneError(Exception):
    """Keystone did not answer, or refused opendoctor's own credentials."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    project_id: str
    user_id: str
    roles: frozenset[str]
    expires: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """opendoctor's own account in Keystone (its password stays out of every log)."""

    auth_url: str
    username: str
    password: str
    project: str
    user_domain: str = "Default"
    project_domain: str = "Default"

    def __repr__(self) -> str:
        return f"ServiceUser({self.username}@{self.project}, {self.auth_url})"


def _epoch(text: str | None) -> float:
    if not text:
        return time.time()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _info(body: dict[str, Any]) -> TokenInfo:
    token = body.get("token") or {}
    project = token.get("project") or {}
    user = token.get("user") or {}
    return TokenInfo(
        project_id=str(project.get("id", "")),
        user_id=str(user.get("id", "")),
        roles=frozenset(str(r.get("name", "")) for r in token.get("roles") or []),
        expires=_epoch(token.get("expires_at")),
    )


class Keystone:
    def __init__(
        self,
        user: ServiceUser,
        http: HttpClient,
        *,
        cache_seconds: float = 300.0,
        cache_size: int = 10_000,
        timeout: float = 5.0,
    ) -> None:
        self.user = user
        self.http = http
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.timeout = timeout
        self._token: tuple[str, float] | None = None  # opendoctor's own, and its expiry
        self._getting = asyncio.Lock()
        self._known: OrderedDict[str, tuple[TokenInfo | None, float]] = OrderedDict()

    @property
    def url(self) -> str:
        return self.user.auth_url.rstrip("/").removesuffix("/v3")

    async def _request(self, method: str, path: str, **kw: Any) -> Response:
        try:
            return await self.http.request(method, f"{self.url}{path}", timeout=self.timeout, **kw)
        except HttpError as exc:
            raise KeystoneError(f"Keystone at {self.url} did not answer: {exc}") from exc

    async def service_token(self, renew: bool = False) -> str:
        """opendoctor's own token, renewed before it expires."""
        async with self._getting:
            if self._token is not None and not renew:
                token, expires = self._token
                if expires - time.time() > RENEW_BEFORE:
                    return token
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": self.user.username,
                                "domain": {"name": self.user.user_domain},
                                "password": self.user.password,
                            }
                        },
                    },
                    "scope": {
                        "project": {
                            "name": self.user.project,
                            "domain": {"name": self.user.project_domain},
                        }
                    },
                }
            }
            resp = await self._request("POST", "/v3/auth/tokens", json=body)
            issued = resp.headers.get("x-subject-token")
            if resp.status != 201 or not issued:
                raise KeystoneError(
                    f"Keystone refused opendoctor's service user {self.user.username!r} "
                    f"(HTTP {resp.status})"
                )
            self._token = (issued, _info(resp.json() or {}).expires)
            return issued

    async def validate(self, token: str) -> TokenInfo | None:
        """Who the token stands for, or None if Keystone says it is not valid (expired,
        revoked, unknown). Raises `KeystoneError` if Keystone cannot say."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        now = time.time()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            self._known.move_to_end(digest)
            return known[0]
        resp = await self._check(token)
        if resp.status == 401:  # our own token went stale before its time: once more
            resp = await self._check(token, renew=True)
        if resp.status == 200:
            info: TokenInfo | None = _info(resp.json() or {})
            assert info is not None
            until = min(info.expires, now + self.cache_seconds)
        elif resp.status == 404:
            info, until = None, now + REFUSED_FOR
        else:
            raise KeystoneError(f"Keystone could not validate a token (HTTP {resp.status})")
        self._known[digest] = (info, until)
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)
        return info

    async def _check(self, token: str, renew: bool = False) -> Response:
        own = await self.service_token(renew=renew)
        headers = {"X-Auth-Token": own, "X-Subject-Token": token}
        return await self._request("GET", "/v3/auth/tokens", headers=headers)

    async def register(self, name: str, type_: str, url: str, region: str | None) -> None:
        """Make sure the catalog has a service of `type_` with a public endpoint at `url`
        (so that clients that log in with a password find opendoctor). Needs a role that
        may change the catalog; what is there already is left as it is."""
        own = await self.service_token()
        headers = {"X-Auth-Token": own}
        resp = await self._request("GET", f"/v3/services?type={type_}", headers=headers)
        if not resp.ok:
            raise KeystoneError(f"cannot read the catalog (HTTP {resp.status})")
        services = (resp.json() or {}).get("services") or []
        if services:
            service_id = str(services[0]["id"])
        else:
            body = {"service": {"name": name, "type": type_, "enabled": True}}
            resp = await self._request("POST", "/v3/services", json=body, headers=headers)
            if resp.status != 201:
                raise KeystoneError(f"cannot add service {type_!r} (HTTP {resp.status})")
            service_id = str(resp.json()["service"]["id"])
        query = f"/v3/endpoints?service_id={service_id}&interface=public"
        resp = await self._request("GET", query, headers=headers)
        if resp.ok and (resp.json() or {}).get("endpoints"):
            return
        endpoint: dict[str, Any] = {
            "service_id": service_id,
            "interface": "public",
            "url": url,
            "enabled": True,
        }
        if region:
            endpoint["region_id"] = region
        resp = await self._request(
            "POST", "/v3/endpoints", json={"endpoint": endpoint}, headers=headers
        )
        if resp.status != 201:
            raise KeystoneError(f"cannot add the {type_!r} endpoint (HTTP {resp.status})")
        log.info("registered in the Keystone catalog", extra={"type": type_, "url": url})
