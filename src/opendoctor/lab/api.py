"""The lab API (aiohttp server): JSON in, JSON out, errors as `{"error": {status, message}}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from opendoctor.lab.records import LabError
from opendoctor.lab.state import Lab

log = logging.getLogger("opendoctor.lab.manager")

MAX_WAIT = 60.0
LAB_KEY = web.AppKey("lab", Lab)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": {"status": status, "message": message}}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LabError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        # aiohttp's own answers (no such route, wrong method) get our error shape too.
        return _error(exc.status, exc.reason)
    except Exception as exc:  # the manager must survive any request
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"{exc.__class__.__name__}: {exc}")


async def _body(request: web.Request, required: bool = True) -> dict[str, Any]:
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


def _field_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool):
        raise LabError(400, f"'{key}' must be true or false")
    return value


def _field_str(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise LabError(400, f"'{key}' must be a non-empty string")
    return value


def _lab(request: web.Request) -> Lab:
    return request.app[LAB_KEY]


async def health(request: web.Request) -> web.Response:
    return _json({"ok": True, "seq": _lab(request).changes.seq})


async def list_hosts(request: web.Request) -> web.Response:
    return _json([h.to_json() for h in _lab(request).hosts.values()])


async def get_host(request: web.Request) -> web.Response:
    return _json(_lab(request).host(request.match_info["name"]).to_json())


async def list_servers(request: web.Request) -> web.Response:
    return _json([s.to_json() for s in _lab(request).servers.values()])


async def get_server(request: web.Request) -> web.Response:
    return _json(_lab(request).server(request.match_info["id"]).to_json())


async def create_server(request: web.Request) -> web.Response:
    body = await _body(request)
    name = _field_str(body, "name")
    project = _field_str(body, "project_id")
    assert name is not None and project is not None
    host = _field_str(body, "host", required=False)
    server = await _lab(request).create_server(name, project, host)
    return _json(server.to_json(), 201)


async def delete_server(request: web.Request) -> web.Response:
    await _lab(request).delete_server(request.match_info["id"])
    return web.Response(status=204)


async def force_down(request: web.Request) -> web.Response:
    down = _field_bool(await _body(request), "forced_down")
    return _json(_lab(request).force_down(request.match_info["name"], down).to_json())


async def set_enabled(request: web.Request) -> web.Response:
    enabled = _field_bool(await _body(request), "enabled")
    return _json(_lab(request).set_enabled(request.match_info["name"], enabled).to_json())


async def fail_host(request: web.Request) -> web.Response:
    return _json(await _lab(request).fail_host(request.match_info["name"]))


async def restore_host(request: web.Request) -> web.Response:
    return _json((await _lab(request).restore_host(request.match_info["name"])).to_json())


async def list_faults(request: web.Request) -> web.Response:
    return _json(_lab(request).faults)


async def reset_state(request: web.Request) -> web.Response:
    state = _field_str(await _body(request), "state")
    assert state is not None
    return _json(_lab(request).reset_state(request.match_info["id"], state).to_json())


async def stop_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).stop_server(request.match_info["id"])).to_json())


async def start_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).start_server(request.match_info["id"])).to_json())


async def migrate(request: web.Request) -> web.Response:
    host = _field_str(await _body(request, required=False), "host", required=False)
    return _json((await _lab(request).migrate(request.match_info["id"], host)).to_json())


async def evacuate(request: web.Request) -> web.Response:
    host = _field_str(await _body(request, required=False), "host", required=False)
    return _json((await _lab(request).evacuate(request.match_info["id"], host)).to_json())


def _query_number(request: web.Request, key: str, default: float) -> float:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise LabError(400, f"query parameter {key!r} must be a number, got {raw!r}") from None
    if not value >= 0:
        raise LabError(400, f"query parameter {key!r} must not be negative")
    return value


async def changes(request: web.Request) -> web.Response:
    since = _query_number(request, "since", 0)
    if since != int(since):
        raise LabError(400, "query parameter 'since' must be an integer")
    wait = min(_query_number(request, "wait", 0), MAX_WAIT)
    seq, items = await _lab(request).changes.wait(int(since), wait)
    return _json({"seq": seq, "changes": items})


def build_app(lab: Lab) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=1024 * 1024)
    app[LAB_KEY] = lab
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/hosts", list_hosts),
            web.get("/hosts/{name}", get_host),
            web.post("/hosts/{name}/force-down", force_down),
            web.post("/hosts/{name}/enabled", set_enabled),
            web.post("/hosts/{name}/fail", fail_host),
            web.post("/hosts/{name}/restore", restore_host),
            web.get("/faults", list_faults),
            web.get("/servers", list_servers),
            web.post("/servers", create_server),
            web.get("/servers/{id}", get_server),
            web.delete("/servers/{id}", delete_server),
            web.post("/servers/{id}/reset-state", reset_state),
            web.post("/servers/{id}/stop", stop_server),
            web.post("/servers/{id}/start", start_server),
            web.post("/servers/{id}/migrate", migrate),
            web.post("/servers/{id}/evacuate", evacuate),
            web.get("/changes", changes),
        ]
    )
    return app
