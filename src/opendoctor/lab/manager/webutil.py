"""Helpers of the lab API's handlers: JSON answers, errors, request bodies and fields."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from opendoctor.lab.manager.records import LabError
from opendoctor.lab.manager.state import Lab

log = logging.getLogger("opendoctor.lab.manager")

LAB_KEY = web.AppKey("lab", Lab)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": {"status": status, "message": message}}, status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LabError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        # aiohttp's own answers (no such route, wrong method) get our error shape too.
        return error_response(exc.status, exc.reason)
    except Exception as exc:  # the manager must survive any request
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{exc.__class__.__name__}: {exc}")


async def body_of(request: web.Request, required: bool = True) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise LabError(400, "a JSON object body is required")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LabError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LabError(400, "body must be a JSON object")
    return body


def field_bool(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise LabError(400, f"'{key}' must be true or false")
    return value


def field_str(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise LabError(400, f"'{key}' must be a non-empty string")
    return value


def field_opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise LabError(400, f"'{key}' must be a string or null")
    return value


def field_port(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise LabError(400, f"'{key}' must be a port number")
    return value


def field_count(body: dict[str, Any], key: str, default: int, most: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise LabError(400, f"'{key}' must be a whole number from 1 to {most}")
    return value


METADATA_ITEMS, METADATA_CHARS = 128, 255  # Nova's limits on server metadata


def field_metadata(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key, {})
    if not isinstance(value, dict) or len(value) > METADATA_ITEMS:
        raise LabError(400, f"'{key}' must be an object of at most {METADATA_ITEMS} items")
    for k, v in value.items():
        if not isinstance(v, str) or not 0 < len(k) <= METADATA_CHARS or len(v) > METADATA_CHARS:
            raise LabError(
                400, f"'{key}' must map names to strings of at most {METADATA_CHARS} characters"
            )
    return dict(value)


def lab_of(request: web.Request) -> Lab:
    return request.app[LAB_KEY]
