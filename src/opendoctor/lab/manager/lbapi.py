"""The load balancer's part of the lab API, in the manner of neutron's LBaaS v1.

* `GET /lb/pools`, `GET /lb/pools/{id}`, `DELETE /lb/pools/{id}`;
* `POST /lb/pools {"name", "vip_port"?, "members": [member, ...]}` (201), where a
  member is `{"server_id"}` (or `{"server_name"}`) or `{"address", "port"}`, each
  with an optional `"admin_state_up"` (default true); the VIP address is the next
  free `{ip_prefix}.250.N`, the port 8080 unless given;
* `POST /lb/pools/{id}/members {member}` (201), `DELETE /lb/members/{id}`;
* `GET /lb/members[?pool=ID]`, `GET /lb/members/{id}`,
  `POST /lb/members/{id} {"admin_state_up": bool}`.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from opendoctor.lab.manager.lb import Member, Pool
from opendoctor.lab.manager.records import LabError
from opendoctor.lab.manager.state import Lab
from opendoctor.lab.manager.webutil import (
    body_of,
    field_bool,
    field_port,
    field_str,
    json_response,
    lab_of,
)

DEFAULT_VIP_PORT = 8080


def _pool(lab: Lab, pool_id: str) -> Pool:
    pool = lab.lb.pools.get(pool_id)
    if pool is None:
        raise LabError(404, f"no pool with id {pool_id!r}")
    return pool


def _member(lab: Lab, member_id: str) -> Member:
    for member in lab.lb.members():
        if member.id == member_id:
            return lab.lb.refresh(member)
    raise LabError(404, f"no member with id {member_id!r}")


def _server_id(lab: Lab, spec: dict[str, Any]) -> str | None:
    if "server_id" in spec:
        server_id = field_str(spec, "server_id")
        assert server_id is not None
        return lab.server(server_id).id
    if "server_name" in spec:
        name = field_str(spec, "server_name")
        for server in lab.servers.values():
            if server.name == name:
                return server.id
        raise LabError(404, f"no server named {name!r}")
    return None


def _new_member(lab: Lab, pool_id: str, spec: Any) -> Member:
    if not isinstance(spec, dict):
        raise LabError(400, "a member must be a JSON object")
    up = field_bool(spec, "admin_state_up", True)
    server_id = _server_id(lab, spec)
    if server_id is not None:
        return lab.lb.new_member(pool_id, server_id=server_id, admin_state_up=up)
    address = field_str(spec, "address")
    return lab.lb.new_member(
        pool_id, address=address, port=field_port(spec, "port"), admin_state_up=up
    )


async def list_pools(request: web.Request) -> web.Response:
    lab = lab_of(request)
    for member in lab.lb.members():
        lab.lb.refresh(member)
    return json_response([p.to_json() for p in lab.lb.pools.values()])


async def get_pool(request: web.Request) -> web.Response:
    lab = lab_of(request)
    pool = _pool(lab, request.match_info["id"])
    for member in pool.members:
        lab.lb.refresh(member)
    return json_response(pool.to_json())


async def create_pool(request: web.Request) -> web.Response:
    lab = lab_of(request)
    body = await body_of(request)
    name = field_str(body, "name")
    assert name is not None
    specs = body.get("members", [])
    if not isinstance(specs, list):
        raise LabError(400, "'members' must be a list")
    port = field_port(body, "vip_port", DEFAULT_VIP_PORT)
    pool_id = str(uuid.uuid4())
    members = [_new_member(lab, pool_id, spec) for spec in specs]
    try:
        address = lab.lb.free_vip()
    except ValueError as exc:
        raise LabError(409, str(exc)) from None
    pool = Pool(pool_id, name, address, port, members)
    try:
        await lab.lb.add_pool(pool)
    except OSError as exc:
        raise LabError(409, f"cannot listen on {address}:{port}: {exc}") from exc
    return json_response(pool.to_json(), 201)


async def delete_pool(request: web.Request) -> web.Response:
    lab = lab_of(request)
    pool = _pool(lab, request.match_info["id"])
    await lab.lb.remove_pool(pool.id)
    return web.Response(status=204)


async def add_member(request: web.Request) -> web.Response:
    lab = lab_of(request)
    pool = _pool(lab, request.match_info["id"])
    member = _new_member(lab, pool.id, await body_of(request))
    pool.members.append(member)
    return json_response(member.to_json(), 201)


async def list_members(request: web.Request) -> web.Response:
    lab = lab_of(request)
    pool_id = request.query.get("pool")
    pools = [_pool(lab, pool_id)] if pool_id else list(lab.lb.pools.values())
    members = [lab.lb.refresh(m) for p in pools for m in p.members]
    return json_response([m.to_json() for m in members])


async def get_member(request: web.Request) -> web.Response:
    return json_response(_member(lab_of(request), request.match_info["id"]).to_json())


async def update_member(request: web.Request) -> web.Response:
    lab = lab_of(request)
    member = _member(lab, request.match_info["id"])
    member.admin_state_up = field_bool(await body_of(request), "admin_state_up")
    return json_response(member.to_json())


async def delete_member(request: web.Request) -> web.Response:
    lab = lab_of(request)
    member = _member(lab, request.match_info["id"])
    pool = _pool(lab, member.pool_id)
    pool.members.remove(member)
    return web.Response(status=204)


def lb_routes() -> list[web.RouteDef]:
    return [
        web.get("/lb/pools", list_pools),
        web.post("/lb/pools", create_pool),
        web.get("/lb/pools/{id}", get_pool),
        web.delete("/lb/pools/{id}", delete_pool),
        web.post("/lb/pools/{id}/members", add_member),
        web.get("/lb/members", list_members),
        web.get("/lb/members/{id}", get_member),
        web.post("/lb/members/{id}", update_member),
        web.delete("/lb/members/{id}", delete_member),
    ]
