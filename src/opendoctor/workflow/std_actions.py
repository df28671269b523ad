"""Mistral's standard actions (`std.*`) and `notify`.

`std.http` calls URLs that tenants wrote, so it goes through the toolbox's HTTP client
and its egress policy, as alarm callbacks do (`core.egress`): a refused address is an
`ActionError` naming the reason, and no request leaves. Every request carries the
action execution's id (`X-Opendoctor-Action-Execution`), the same on a call repeated
after a restart, so a receiver can tell a repeat from a new call.

`std.wait` and `std.sleep` are durable timers: the engine runs them itself (a restart
resumes the time left) and reads `timer_seconds` for how long; their `run` only sleeps,
for a caller without an engine.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from opendoctor.infra.httpclient import EgressRefused, HttpClient, HttpError
from opendoctor.workflow.actions import (
    TIMER_ACTIONS,
    ActionContext,
    ActionDef,
    ActionError,
    Param,
    Toolbox,
    builtin_actions,
    define,
    mapping,
    number,
    optional_string,
    string,
)

# builtin_actions too: importable from here as well as from `actions`.
__all__ = ["TIMER_ACTIONS", "builtin_actions", "std_actions", "timer_seconds"]

MAX_TIMER = 86400.0  # a day: longer waits belong to a schedule, not a task
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_HTTP_TIMEOUT = 300.0
ACTION_HEADER = "X-Opendoctor-Action-Execution"


def timer_seconds(given: Mapping[str, Any], action: str = "std.sleep") -> float:
    """How long a timer action's input says to wait (1 s when it does not say), or
    `ActionError` if that is not a number from 0 to a day."""
    return number({"seconds": given.get("seconds", 1)}, "seconds", action, at_most=MAX_TIMER)


async def _noop(given: dict[str, Any], ctx: ActionContext) -> None:
    return None


async def _echo(given: dict[str, Any], ctx: ActionContext) -> Any:
    return given["output"]


async def _fail(given: dict[str, Any], ctx: ActionContext) -> None:
    raise ActionError("std.fail: failed on purpose", given["error_data"])


def _timer(name: str) -> ActionDef:
    async def run(given: dict[str, Any], ctx: ActionContext) -> None:
        await asyncio.sleep(timer_seconds(given, name))

    return define(
        name,
        [Param("seconds", default=1)],
        run,
        "Wait `seconds` (at most a day); a restart resumes the time left.",
        safe=True,
    )


def _http_safe(given: Mapping[str, Any]) -> bool:
    method = given.get("method", "GET")
    return isinstance(method, str) and method.upper() in SAFE_METHODS


def _with_query(url: str, params: dict[str, Any]) -> str:
    query = urlencode({str(k): v for k, v in params.items()}, doseq=True)
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}" if query else url


def _content(body: bytes) -> Any:
    """The answer as JSON when it is JSON, else as text (Mistral's `content`)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _payload(given: dict[str, Any], headers: dict[str, str]) -> bytes | None:
    """The request body: `body` as text, or JSON (`json`, or `body` given a mapping or
    a list, as older Mistral encoded it)."""
    body, as_json = given["body"], given["json"]
    if body is not None and as_json is not None:
        raise ActionError("std.http: give body or json, not both")
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, dict | list):
        as_json = body
    elif body is not None:
        raise ActionError(f"std.http: body must be text, a mapping or a list, got {body!r}")
    if as_json is None:
        return None
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    try:
        return orjson.dumps(as_json)
    except TypeError as exc:
        raise ActionError(f"std.http: json cannot be encoded: {exc}") from None


def _headers(given: dict[str, Any], ctx: ActionContext) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in mapping(given, "headers", "std.http").items()}
    auth = optional_string(given, "auth", "std.http")
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user:
            raise ActionError("std.http: auth must be 'user:password' (HTTP basic)")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    # Ours, whatever the workflow put there: a receiver relies on it to spot repeats.
    headers = {k: v for k, v in headers.items() if k.lower() != ACTION_HEADER.lower()}
    headers[ACTION_HEADER] = ctx.action_execution_id
    return headers


async def _call(http: HttpClient, given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    url = string(given, "url", "std.http")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ActionError(f"std.http: url must be an http or https URL, got {url!r}")
    method = string(given, "method", "std.http").upper()
    if method not in HTTP_METHODS:
        raise ActionError(f"std.http: method must be one of {', '.join(HTTP_METHODS)}")
    if given["allow_redirects"]:
        raise ActionError("std.http: redirects are not followed (allow_redirects: false)")
    timeout = None
    if given["timeout"] is not None:
        timeout = number(given, "timeout", "std.http", at_most=MAX_HTTP_TIMEOUT)
        if timeout == 0:
            raise ActionError("std.http: timeout must be more than 0")
    url = _with_query(url, mapping(given, "params", "std.http"))
    headers = _headers(given, ctx)
    content = _payload(given, headers)
    try:
        resp = await http.request(method, url, headers=headers, timeout=timeout, content=content)
    except EgressRefused as exc:
        raise ActionError(f"std.http refused: {exc}") from None
    except HttpError as exc:
        raise ActionError(f"std.http: {exc}") from None
    result = {"content": _content(resp.body), "status": resp.status, "headers": resp.headers}
    if resp.status >= 400:
        raise ActionError(f"std.http: HTTP {resp.status} from {method} {url}", result)
    if resp.status >= 300:
        # The client follows none: each hop would need its own egress check.
        raise ActionError(
            f"std.http: HTTP {resp.status} from {method} {url}: redirects are not followed",
            result,
        )
    return result


def std_actions(toolbox: Toolbox) -> list[ActionDef]:
    async def http(given: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        if toolbox.http is None:
            raise ActionError("std.http: no HTTP client is configured")
        return await _call(toolbox.http, given, ctx)

    async def notify(given: dict[str, Any], ctx: ActionContext) -> dict[str, int]:
        if toolbox.notify is None:
            raise ActionError("notify: no notifier is configured")
        event_type = string(given, "event_type", "notify")
        told = await toolbox.notify(event_type, mapping(given, "traits", "notify"))
        return {"told": told}

    return [
        define("std.noop", [], _noop, "Do nothing.", safe=True),
        define("std.echo", [Param("output", True)], _echo, "Return `output`.", safe=True),
        define(
            "std.fail",
            [Param("error_data")],
            _fail,
            "Fail, with `error_data` as the task's result.",
            safe=True,
        ),
        define(
            "std.http",
            [
                Param("url", True),
                Param("method", default="GET"),
                Param("params"),
                Param("body"),
                Param("json"),
                Param("headers"),
                Param("timeout"),
                Param("auth"),
                Param("allow_redirects"),
            ],
            http,
            "Call a URL the egress policy allows; `{content, status, headers}`.",
            safe_when=_http_safe,
        ),
        _timer("std.wait"),
        _timer("std.sleep"),
        define(
            "notify",
            [Param("event_type", True), Param("traits")],
            notify,
            "Fire an event to the alarms that match it; `{told: n}`.",
        ),
    ]
