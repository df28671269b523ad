"""The lab API (aiohttp server): JSON in, JSON out, errors as `{"error": {status, message}}`.

Hosts, servers (with their applications' role, health and named services, kill,
restart and rebuild), server groups, the events sink and the change feed here; the
load balancer's routes in `lbapi`. Every route is described in docs/lab.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from opendoctor.lab.manager.lbapi import lb_routes
from opendoctor.lab.manager.records import LabError, Size
from opendoctor.lab.manager.redfish import ACCOUNT_KEY, BmcAccount, redfish_auth, redfish_routes
from opendoctor.lab.manager.state import Lab
from opendoctor.lab.manager.webutil import LAB_KEY, errors_middleware, field_count, field_metadata
from opendoctor.lab.manager.webutil import body_of as _body
from opendoctor.lab.manager.webutil import field_bool as _field_bool
from opendoctor.lab.manager.webutil import field_opt_str as _field_opt_str
from opendoctor.lab.manager.webutil import field_str as _field_str
from opendoctor.lab.manager.webutil import json_response as _json
from opendoctor.lab.manager.webutil import lab_of as _lab
from opendoctor.lab.spec import loss_problem, services_problem, version_problem

MAX_WAIT = 60.0
MAX_RESET = 10_000  # servers in one reset-state request
MAX_CHANGES = 100_000  # changes in one answer of the change feed (all it keeps)


async def health(request: web.Request) -> web.Response:
    return _json({"ok": True, "seq": _lab(request).changes.seq})


async def list_hosts(request: web.Request) -> web.Response:
    return _json([h.to_json() for h in _lab(request).hosts.values()])


async def get_host(request: web.Request) -> web.Response:
    return _json(_lab(request).host(request.match_info["name"]).to_json())


async def list_servers(request: web.Request) -> web.Response:
    lab = _lab(request)
    await lab.refresh_services()
    return _json([s.to_json() for s in lab.servers.values()])


async def get_server(request: web.Request) -> web.Response:
    lab = _lab(request)
    server = lab.server(request.match_info["id"])
    await lab.refresh_services()
    return _json(server.to_json())


def _services(body: dict[str, Any]) -> list[str]:
    names = body.get("services", [])
    if not isinstance(names, list) or len(set(map(str, names))) != len(names):
        raise LabError(400, "'services' must be a list of distinct service names")
    if (problem := services_problem(dict.fromkeys(names, True))) is not None:
        raise LabError(400, f"'services': {problem}")
    return names


async def create_server(request: web.Request) -> web.Response:
    body = await _body(request)
    name = _field_str(body, "name")
    project = _field_str(body, "project_id")
    assert name is not None and project is not None
    host = _field_str(body, "host", required=False)
    role = _field_str(body, "role", required=False) or "active"
    size = Size(field_count(body, "vcpus", 1, 1024), field_count(body, "ram_mb", 512, 1 << 24))
    metadata = field_metadata(body, "metadata")
    services, group = _services(body), _field_str(body, "group", required=False)
    server = await _lab(request).create_server(
        name, project, host, role, metadata, size, services=services, group=group
    )
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


async def stage_version(request: web.Request) -> web.Response:
    version = (await _body(request)).get("version")
    if not isinstance(version, str):
        raise LabError(400, f"'version' {version_problem(version)}")
    return _json(_lab(request).stage_version(request.match_info["name"], version).to_json())


async def fail_host(request: web.Request) -> web.Response:
    return _json(await _lab(request).fail_host(request.match_info["name"]))


async def restore_host(request: web.Request) -> web.Response:
    return _json((await _lab(request).restore_host(request.match_info["name"])).to_json())


async def cut_link(request: web.Request) -> web.Response:
    return _json(await _lab(request).cut_link(request.match_info["name"]))


async def restore_link(request: web.Request) -> web.Response:
    return _json((await _lab(request).restore_link(request.match_info["name"])).to_json())


async def set_loss(request: web.Request) -> web.Response:
    body = await _body(request)
    fraction, path = body.get("fraction"), body.get("path", "both")
    if (problem := loss_problem(fraction, path)) is not None:
        raise LabError(400, problem)
    assert isinstance(fraction, int | float) and isinstance(path, str)
    host = await _lab(request).set_loss(request.match_info["name"], float(fraction), path)
    return _json(host.to_json())


async def list_faults(request: web.Request) -> web.Response:
    return _json(_lab(request).faults)


async def reset_state(request: web.Request) -> web.Response:
    state = _field_str(await _body(request), "state")
    assert state is not None
    return _json(_lab(request).reset_state(request.match_info["id"], state).to_json())


async def reset_states(request: web.Request) -> web.Response:
    """Many servers' state at once (a host's, when it fails): one request, not one each."""
    body = await _body(request)
    state = _field_str(body, "state")
    assert state is not None
    ids = body.get("servers")
    if (
        not isinstance(ids, list)
        or not 1 <= len(ids) <= MAX_RESET
        or not all(isinstance(i, str) for i in ids)
    ):
        raise LabError(400, f"'servers' must be a list of 1 to {MAX_RESET} server ids")
    done, refused = _lab(request).reset_states(ids, state)
    return _json({"servers": [s.to_json() for s in done], "refused": refused})


async def stop_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).stop_server(request.match_info["id"])).to_json())


async def start_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).start_server(request.match_info["id"])).to_json())


async def migrate(request: web.Request) -> web.Response:
    host = _field_str(await _body(request, required=False), "host", required=False)
    return _json((await _lab(request).migrate(request.match_info["id"], host)).to_json())


async def live_migrate(request: web.Request) -> web.Response:
    host = _field_str(await _body(request, required=False), "host", required=False)
    return _json((await _lab(request).live_migrate(request.match_info["id"], host)).to_json())


async def evacuate(request: web.Request) -> web.Response:
    host = _field_str(await _body(request, required=False), "host", required=False)
    return _json((await _lab(request).evacuate(request.match_info["id"], host)).to_json())


async def kill_server(request: web.Request) -> web.Response:
    return _json(await _lab(request).kill_server(request.match_info["id"]))


async def restart_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).restart_server(request.match_info["id"])).to_json())


async def set_role(request: web.Request) -> web.Response:
    role = _field_str(await _body(request), "role")
    server = await _lab(request).set_app(request.match_info["id"], role=role)
    return _json(server.to_json())


async def set_health(request: web.Request) -> web.Response:
    body = await _body(request)
    healthy = _field_bool(body, "healthy")
    service = _field_str(body, "service", required=False)
    server = await _lab(request).set_app(request.match_info["id"], healthy=healthy, service=service)
    return _json(server.to_json())


async def rebuild_server(request: web.Request) -> web.Response:
    return _json((await _lab(request).rebuild(request.match_info["id"])).to_json())


async def list_groups(request: web.Request) -> web.Response:
    return _json(_lab(request).groups.to_json())


async def get_group(request: web.Request) -> web.Response:
    return _json(_lab(request).groups.get(request.match_info["id"]).to_json())


async def create_group(request: web.Request) -> web.Response:
    body = await _body(request)
    name, project = _field_str(body, "name"), _field_str(body, "project_id")
    policy = _field_opt_str(body, "policy") or ""
    assert name is not None and project is not None
    return _json(_lab(request).groups.create(name, policy, project).to_json(), 201)


async def delete_group(request: web.Request) -> web.Response:
    _lab(request).groups.delete(request.match_info["id"])
    return web.Response(status=204)


async def get_events_sink(request: web.Request) -> web.Response:
    return _json(await _lab(request).events.status())


async def put_events_sink(request: web.Request) -> web.Response:
    body = await _body(request)
    url, token = _field_opt_str(body, "url"), _field_opt_str(body, "token")
    hostlink = _field_opt_str(body, "hostlink_url")
    for key, value in (("url", url), ("hostlink_url", hostlink)):
        if value is not None and not value.startswith(("http://", "https://")):
            raise LabError(400, f"'{key}' must be an http(s) URL, got {value!r}")
    return _json(await _lab(request).events.set_sink(url, token or None, hostlink or None))


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
    limit = _query_number(request, "limit", MAX_CHANGES)
    if limit != int(limit) or not 1 <= limit <= MAX_CHANGES:
        raise LabError(400, f"query parameter 'limit' must be an integer from 1 to {MAX_CHANGES}")
    seq, items = await _lab(request).changes.wait(int(since), wait, int(limit))
    return _json({"seq": seq, "changes": items})


def build_app(lab: Lab, bmc: BmcAccount) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, redfish_auth], client_max_size=1024 * 1024
    )
    app[LAB_KEY] = lab
    app[ACCOUNT_KEY] = bmc
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/hosts", list_hosts),
            web.get("/hosts/{name}", get_host),
            web.post("/hosts/{name}/force-down", force_down),
            web.post("/hosts/{name}/enabled", set_enabled),
            web.put("/hosts/{name}/staged-version", stage_version),
            web.post("/hosts/{name}/fail", fail_host),
            web.post("/hosts/{name}/restore", restore_host),
            web.post("/hosts/{name}/cut-link", cut_link),
            web.post("/hosts/{name}/restore-link", restore_link),
            web.put("/hosts/{name}/heartbeat-loss", set_loss),
            web.get("/faults", list_faults),
            web.get("/servers", list_servers),
            web.post("/servers", create_server),
            web.post("/servers/reset-state", reset_states),
            web.get("/servers/{id}", get_server),
            web.delete("/servers/{id}", delete_server),
            web.post("/servers/{id}/reset-state", reset_state),
            web.post("/servers/{id}/stop", stop_server),
            web.post("/servers/{id}/start", start_server),
            web.post("/servers/{id}/migrate", migrate),
            web.post("/servers/{id}/live-migrate", live_migrate),
            web.post("/servers/{id}/evacuate", evacuate),
            web.post("/servers/{id}/kill", kill_server),
            web.post("/servers/{id}/restart", restart_server),
            web.post("/servers/{id}/role", set_role),
            web.post("/servers/{id}/health", set_health),
            web.post("/servers/{id}/rebuild", rebuild_server),
            web.get("/server-groups", list_groups),
            web.post("/server-groups", create_group),
            web.get("/server-groups/{id}", get_group),
            web.delete("/server-groups/{id}", delete_group),
            web.get("/events-sink", get_events_sink),
            web.put("/events-sink", put_events_sink),
            web.get("/changes", changes),
            *lb_routes(),
            *redfish_routes(),
        ]
    )
    return app
