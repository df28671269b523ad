"""Who is calling: the identity every northbound request acts for (DESIGN.md §6)."""

from __future__ import annotations

import hmac

from fastapi import Request

from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.settings import ApiSettings


def _same_token(expected: str, given: str) -> bool:
    """Constant-time comparison of a configured token with a header's value.

    On bytes: `hmac.compare_digest` refuses str with non-ASCII characters (TypeError, a
    500 for whoever sends one). The server hands header values over decoded as Latin-1,
    so that encoding gives back the bytes that were sent; a configured token is UTF-8.
    """
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire: an in-process caller's own str
        raw = given.encode()
    return hmac.compare_digest(expected.encode(), raw)


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
    project = headers.get("x-project-id") or headers.get("x-tenant-id")
    if not project:
        raise RequestError(401, "an X-Project-Id header is required", "X-Project-Id")
    return Identity(
        project_id=project,
        user_id=headers.get("x-user-id", ""),
        roles=_roles(headers.get("x-roles", "")),
    )


def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller's identity, or 401."""
    settings: ApiSettings = request.app.state.settings.api
    return identify(settings, request)


def check_southbound(request: Request) -> None:
    """FastAPI dependency for monitor endpoints: their own credential when one is set."""
    settings: ApiSettings = request.app.state.settings.api
    expected = settings.southbound_token
    if expected is None:
        return
    token = request.headers.get("x-auth-token", "")
    if not _same_token(expected, token):
        raise RequestError(401, "southbound endpoints need the monitor token", "X-Auth-Token")
