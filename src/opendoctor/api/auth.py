"""Who is calling: the identity every northbound request acts for (DESIGN.md §6)."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from fastapi import Request

from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.secretfile import SecretFileError, read_secret_file
from opendoctor.core.settings import ApiSettings
from opendoctor.infra.keystone import Keystone, KeystoneError, TokenInfo


def _wire_bytes(given: str) -> bytes:
    """A header's value as the bytes that were sent, for constant-time comparison.

    On bytes: `hmac.compare_digest` refuses str with non-ASCII characters (TypeError, a
    500 for whoever sends one). The server hands header values over decoded as Latin-1,
    so that encoding gives back the bytes that were sent; a configured token is UTF-8.
    """
    try:
        return given.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire: an in-process caller's own str
        return given.encode()


def _same_token(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), _wire_bytes(given))


def _roles(raw: str) -> frozenset[str]:
    return frozenset(r.strip() for r in raw.split(",") if r.strip())


def identify(settings: ApiSettings, request: Request) -> Identity:
    headers = request.headers
    if settings.auth_mode == "token":
        token = headers.get("x-auth-token")
        if not token:
            raise RequestError(401, "an X-Auth-Token header is required", "X-Auth-Token")
        for known, ident in settings.tokens.items():
            if _same_token(known, token):
                # Identity headers sent from outside are ignored in this mode.
                return Identity(
                    project_id=str(ident.get("project_id", "")),
                    user_id=str(ident.get("user_id", "")),
                    roles=frozenset(ident.get("roles", [])),
                )
        raise RequestError(401, "the token is not known", "X-Auth-Token")
    if not _from_trusted_proxy(settings, request):
        raise RequestError(
            401,
            "identity headers are believed only from loopback and api.trusted_proxies",
            "X-Project-Id",
        )
    project = headers.get("x-project-id") or headers.get("x-tenant-id")
    if not project:
        raise RequestError(401, "an X-Project-Id header is required", "X-Project-Id")
    user = headers.get("x-user-id", "")
    roles = headers.get("x-roles", "")
    _bounded("X-Project-Id", project, MAX_ID)
    _bounded("X-User-Id", user, MAX_ID)
    _bounded("X-Roles", roles, MAX_ROLES)
    return Identity(project_id=project, user_id=user, roles=_roles(roles))


MAX_ID = 255  # what the store keeps of a project or user id (Keystone's are 64)
MAX_ROLES = 1024
MAX_TOKEN = 8192  # a Fernet token is under 300 characters, a PKI one was a few KB


def _bounded(header: str, value: str, limit: int) -> None:
    """A 400 naming the header for a value no store column or log line should take."""
    if len(value) > limit:
        raise RequestError(400, f"{len(value)} characters, over {limit}", header)
    if not value.isprintable():
        raise RequestError(400, "control characters are not allowed", header)


def _from_trusted_proxy(settings: ApiSettings, request: Request) -> bool:
    peer = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return address.is_loopback or any(address in net for net in settings.trusted_proxies)


async def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller's identity, or 401."""
    settings: ApiSettings = request.app.state.settings.api
    if settings.auth_mode == "keystone":
        identity = await keystone_identity(request.app.state.keystone, request)
    else:
        identity = identify(settings, request)
    request.state.identity = identity  # for the audit trail (api.audit)
    return identity


async def _validated(keystone: Keystone, token: str) -> TokenInfo:
    try:
        info = await keystone.validate(token)
    except KeystoneError as exc:
        raise RequestError(503, f"cannot check the token: {exc}", "X-Auth-Token") from None
    if info is None:
        raise RequestError(
            401,
            "Keystone says the token is not valid (expired, revoked or unknown)",
            "X-Auth-Token",
        )
    return info


async def keystone_identity(keystone: Keystone, request: Request) -> Identity:
    """The caller as Keystone knows it; identity headers sent from outside are ignored."""
    token = request.headers.get("x-auth-token")
    if not token:
        raise RequestError(
            401, "an X-Auth-Token header (a Keystone token) is required", "X-Auth-Token"
        )
    _bounded("X-Auth-Token", token, MAX_TOKEN)
    info = await _validated(keystone, token)
    return Identity(project_id=info.project_id, user_id=info.user_id, roles=info.roles)


ANONYMOUS = "anonymous"  # what an event from an unauthenticated monitor records


class MonitorTokenError(ValueError):
    """The monitor tokens file cannot be used (unreadable, open to others, malformed)."""


@dataclass(frozen=True, slots=True)
class Monitors:
    """Who may report faults: each monitor's name and token. Without any, and without
    `anonymous_monitors`, the events API takes nothing (a fault posted by anyone would
    fence a host)."""

    tokens: tuple[tuple[str, bytes], ...]
    anonymous: bool

    @classmethod
    def load(cls, settings: ApiSettings) -> Monitors:
        """From the settings and the tokens file; raises `MonitorTokenError`."""
        named = {
            name: secret.get_secret_value() for name, secret in settings.monitor_tokens.items()
        }
        if settings.southbound_token is not None:
            named.setdefault("southbound", settings.southbound_token.get_secret_value())
        if settings.monitor_tokens_file is not None:
            named.update(read_tokens_file(settings.monitor_tokens_file))
        for name, token in named.items():
            if not token:
                raise MonitorTokenError(f"monitor {name!r} has an empty token")
        tokens = tuple((name, token.encode()) for name, token in sorted(named.items()))
        return cls(tokens, settings.anonymous_monitors)

    def knows(self, token: str) -> bool:
        """Whether the token is one of the configured monitor tokens."""
        raw = _wire_bytes(token)
        found = False
        for _, known in self.tokens:  # every one compared: the time tells nothing
            found |= hmac.compare_digest(known, raw)
        return found

    def identify(self, request: Request) -> str:
        """The name of the monitor that sent this request, or a 401."""
        return self.named(request.headers.get("x-auth-token"))

    def named(self, token: str | None) -> str:
        """The name of the monitor whose token this is, or a 401."""
        if token is None:
            if self.anonymous:
                return ANONYMOUS
            if not self.tokens:
                raise RequestError(
                    401,
                    "this service takes events only from monitors with a token, and none "
                    "is configured (api.monitor_tokens)",
                    "X-Auth-Token",
                )
            raise RequestError(401, "monitors must send their X-Auth-Token", "X-Auth-Token")
        raw = _wire_bytes(token)
        found = None
        for name, known in self.tokens:  # every one compared: the time tells nothing
            if hmac.compare_digest(known, raw):
                found = name
        if found is None:
            raise RequestError(401, "the monitor token is not known", "X-Auth-Token")
        return found


def read_tokens_file(path: Path) -> dict[str, str]:
    try:
        return read_secret_file(path, "monitor tokens file")
    except SecretFileError as exc:
        raise MonitorTokenError(str(exc)) from None


def asks_keystone(token: str | None, settings: ApiSettings, monitors: Monitors) -> TypeGuard[str]:
    """Whether telling the monitor behind `token` needs Keystone: a token that is neither
    a configured monitor's nor missing, in keystone mode."""
    return settings.auth_mode == "keystone" and token is not None and not monitors.knows(token)


async def monitor_of(request: Request) -> str:
    """FastAPI dependency for the events API: the monitor's name, or a 401. In keystone
    mode, a Keystone token with one of `api.keystone.monitor_roles` also reports, as
    `keystone:<user id>`."""
    return await monitor_with(request, request.headers.get("x-auth-token"))


async def monitor_with(request: Request, token: str | None) -> str:
    """`monitor_of` for a token the request carries elsewhere (a webhook's
    `Authorization: Bearer`)."""
    monitors: Monitors = request.app.state.monitors
    settings: ApiSettings = request.app.state.settings.api
    if not asks_keystone(token, settings, monitors):
        # A configured monitor, anonymous, or the 401 that says what to send.
        return monitors.named(token)
    _bounded("X-Auth-Token", token, MAX_TOKEN)
    info = await _validated(request.app.state.keystone, token)
    if info.roles.isdisjoint(settings.keystone.monitor_roles):
        roles = ", ".join(settings.keystone.monitor_roles)
        raise RequestError(403, f"reporting events needs one of the roles {roles}", "X-Auth-Token")
    return f"keystone:{info.user_id}"
