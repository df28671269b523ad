"""`/v1/clusters`: HA as a service (docs/haas.md).

A tenant declares clusters of its own project's servers (levels `vm` and
`application`); hosts, and the `host` and `cloud-service` levels, are the admin's. A
cluster of another project answers 404, as one that does not exist. Every field is
bounded (`api.haas_schema`), and a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response

from opendoctor.api.auth import current_identity
from opendoctor.api.facade import Facade
from opendoctor.api.haas_schema import (
    ClusterIn,
    FencingDeviceIn,
    NodeIn,
    PolicyIn,
    ResourceIn,
    ServiceIn,
)
from opendoctor.api.native import Marker, known_marker, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.haas import (
    ADMIN_LEVELS,
    MAX_CLUSTERS_PER_PROJECT,
    MAX_NODES,
    MAX_PARTS,
    Cluster,
    ClusterView,
    FencingDevice,
    Node,
    Part,
    Policy,
    Resource,
    Service,
)
from opendoctor.core.identity import Identity
from opendoctor.store.haas import HaasStore, Taken

router = APIRouter(prefix="/v1/clusters", tags=["ha-as-a-service"])

Who = Annotated[Identity, Depends(current_identity)]
ClusterId = Annotated[str, Path(min_length=1, max_length=36, description="the cluster's id")]
ItemId = Annotated[str, Path(min_length=1, max_length=36, description="the item's id")]
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the name, the node or the role is taken, or a limit reached"}
}


def include(app: FastAPI, service: Facade) -> None:
    """Serve `/v1/clusters` from the service's HA store."""
    app.state.haas = service.haas
    app.include_router(router)


def _store(request: Request) -> HaasStore:
    store: HaasStore = request.app.state.haas
    return store


async def _view(request: Request, identity: Identity, cluster_id: str) -> ClusterView:
    view = await _store(request).view(cluster_id)
    if view is None or not identity.can_see(view.cluster.project_id):
        raise RequestError(404, f"no cluster {cluster_id}", "cluster_id")
    return view


# --- clusters -----------------------------------------------------------------------


@router.post("", status_code=201, summary="Declare a cluster", responses=CONFLICT)
async def create_cluster(request: Request, body: ClusterIn, identity: Who) -> dict[str, Any]:
    if body.level in ADMIN_LEVELS and not identity.is_admin:
        raise RequestError(403, f"{body.level} clusters need the admin role", "level")
    project = body.project_id or identity.project_id
    if project != identity.project_id and not identity.is_admin:
        raise RequestError(403, "only the admin role declares another project's", "project_id")
    store = _store(request)
    if await store.count_clusters(project) >= MAX_CLUSTERS_PER_PROJECT:
        raise RequestError(
            409, f"project {project} has {MAX_CLUSTERS_PER_PROJECT} clusters, the most", "name"
        )
    cluster = Cluster(body.name, project, body.level, body.description)
    return asdict(await store.add_cluster(cluster))


@router.get("", summary="List clusters (a tenant's own; every one for the admin)")
async def list_clusters(
    request: Request,
    identity: Who,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    marker: Marker = None,
) -> list[dict[str, Any]]:
    project = None if identity.is_admin else identity.project_id
    with known_marker():
        found = await _store(request).clusters(project, limit, marker)
    return [asdict(c) for c in found]


@router.get("/{cluster_id}", summary="Show a cluster with its nodes and parts")
async def show_cluster(request: Request, cluster_id: ClusterId, identity: Who) -> dict[str, Any]:
    return (await _view(request, identity, cluster_id)).to_dict()


@router.delete("/{cluster_id}", status_code=204, summary="Delete a cluster and its history")
async def delete_cluster(request: Request, cluster_id: ClusterId, identity: Who) -> Response:
    await _view(request, identity, cluster_id)
    await _store(request).delete_cluster(cluster_id)
    return Response(status_code=204)


@router.get("/{cluster_id}/state", summary="A cluster's state and its nodes' roles and states")
async def cluster_state(request: Request, cluster_id: ClusterId, identity: Who) -> dict[str, Any]:
    view = await _view(request, identity, cluster_id)
    nodes = [
        {"id": n.id, "kind": n.kind, "ref": n.ref, "role": n.role, "state": n.state}
        for n in view.nodes
    ]
    active = [n.ref for n in view.nodes if n.role == "active"]
    return {"id": view.cluster.id, "state": view.cluster.state, "active": active, "nodes": nodes}


@router.get("/{cluster_id}/history", summary="What was done for a cluster, oldest first")
async def cluster_history(
    request: Request,
    cluster_id: ClusterId,
    identity: Who,
    limit: Annotated[int, Query(ge=1, le=1000, description="the newest this many")] = 100,
) -> list[dict[str, Any]]:
    await _view(request, identity, cluster_id)
    return [asdict(e) for e in await _store(request).history(cluster_id, limit)]


# --- nodes --------------------------------------------------------------------------


@router.post("/{cluster_id}/nodes", status_code=201, summary="Add a node", responses=CONFLICT)
async def add_node(
    request: Request, cluster_id: ClusterId, body: NodeIn, identity: Who
) -> dict[str, Any]:
    view = await _view(request, identity, cluster_id)
    level = view.cluster.level
    service = service_of(request)
    if body.kind == "host":
        if not identity.is_admin:
            raise RequestError(403, "host nodes need the admin role", "kind")
        if level in ("vm", "application"):
            raise RequestError(400, f"a {level} cluster's nodes are servers", "kind")
        if body.ref not in service.hosts():
            raise RequestError(400, f"no host {body.ref}", "ref")
    else:
        if level == "host":
            raise RequestError(400, "a host cluster's nodes are hosts", "kind")
        server = service.servers().get(body.ref)
        if server is None or server.project_id != view.cluster.project_id:
            raise RequestError(
                400, f"no server {body.ref} in project {view.cluster.project_id}", "ref"
            )
    if len(view.nodes) >= MAX_NODES:
        raise RequestError(409, f"the cluster has {MAX_NODES} nodes, the most", "ref")
    if body.role == "active" and any(n.role == "active" for n in view.nodes):
        raise RequestError(409, "the cluster has an active node already", "role")
    store = _store(request)
    if await store.nodes_of(body.kind, body.ref):
        raise RequestError(409, f"{body.kind} {body.ref} is a node of a cluster already", "ref")
    node = Node(cluster_id, body.kind, body.ref, body.role, body.priority)
    try:
        return asdict(await store.add_node(node))
    except Taken as exc:
        raise RequestError(409, str(exc), "ref") from None


@router.get("/{cluster_id}/nodes", summary="A cluster's nodes, by priority")
async def list_nodes(
    request: Request, cluster_id: ClusterId, identity: Who
) -> list[dict[str, Any]]:
    return [asdict(n) for n in (await _view(request, identity, cluster_id)).nodes]


@router.delete("/{cluster_id}/nodes/{item_id}", status_code=204, summary="Remove a node")
async def delete_node(
    request: Request, cluster_id: ClusterId, item_id: ItemId, identity: Who
) -> Response:
    view = await _view(request, identity, cluster_id)
    if view.node(item_id) is None:
        raise RequestError(404, f"no node {item_id} in this cluster", "item_id")
    naming = [*view.services, *view.fencing, *view.resources]
    if any(
        item_id in getattr(p, "node_ids", ()) or getattr(p, "node_id", None) == item_id
        for p in naming
    ):
        raise RequestError(409, "a service, resource or fencing device names it", "item_id")
    await _store(request).delete_node(cluster_id, item_id)
    return Response(status_code=204)


# --- resources, services, fencing devices, policies --------------------------------


def _node_of(view: ClusterView, node_id: str, field: str) -> Node:
    node = view.node(node_id)
    if node is None:
        raise RequestError(400, f"no node {node_id} in this cluster", field)
    return node


def _free_name(parts: list[Any], name: str) -> None:
    if any(p.name == name for p in parts):
        raise RequestError(409, f"the cluster has one named {name} already", "name")


def _resource(view: ClusterView, body: ResourceIn, request: Request) -> Part:
    _free_name(view.resources, body.name)
    if body.node_id is not None:
        _node_of(view, body.node_id, "node_id")
    return Resource(view.cluster.id, body.name, body.kind, dict(body.properties), body.node_id)


def _service(view: ClusterView, body: ServiceIn, request: Request) -> Part:
    _free_name(view.services, body.name)
    for i, node_id in enumerate(body.node_ids):
        _node_of(view, node_id, f"node_ids[{i}]")
    return Service(view.cluster.id, body.name, body.guest_name, tuple(body.node_ids))


async def _fencing(view: ClusterView, body: FencingDeviceIn, request: Request) -> Part:
    node = _node_of(view, body.node_id, "node_id")
    if view.fence_of(node.id) is not None:
        raise RequestError(409, "the node has a fencing device already", "node_id")
    if body.kind == "vim" and node.kind != "server":
        raise RequestError(400, "vim fences a server node; a host's is its bmc", "kind")
    if body.kind == "bmc":
        if node.kind != "host":
            raise RequestError(400, "bmc fences a host node; a server's is vim", "kind")
        service = service_of(request)
        configured = node.ref in service.settings.recovery.fencing.devices
        registered = service.fence_devices is not None and (
            await service.fence_devices.shown(node.ref) is not None
        )
        if not (configured or registered):
            raise RequestError(
                400, f"no BMC is known for {node.ref}: PUT /v1/fence-devices/{node.ref}", "kind"
            )
    return FencingDevice(view.cluster.id, node.id, body.kind)


def _policy(view: ClusterView, body: PolicyIn, request: Request) -> Part:
    _free_name(view.policies, body.name)
    known = {s.name for s in view.services}
    if body.applies_to == "node" and body.services:
        raise RequestError(400, "a node policy names no services", "services")
    for i, name in enumerate(body.services):
        if name not in known:
            raise RequestError(400, f"no service {name} in this cluster", f"services[{i}]")
    hosts = service_of(request).hosts()
    for i, item in enumerate(body.domain):
        if body.operation == "evacuate" and item not in hosts:
            raise RequestError(400, f"no host {item}", f"domain[{i}]")
        if body.operation == "switch-over" and not any(item in (n.id, n.ref) for n in view.nodes):
            raise RequestError(400, f"no node {item} in this cluster", f"domain[{i}]")
        if body.operation in ("restart", "rebuild"):
            raise RequestError(400, "only evacuate and switch-over have a domain", "domain")
    return Policy(
        view.cluster.id,
        body.name,
        body.operation,
        body.applies_to,
        tuple(body.services),
        tuple(body.domain),
        body.priority,
        body.timeout,
        body.retries,
    )


def _part_routes(
    kind: str,
    body_type: type[Any],
    build: Callable[[ClusterView, Any, Request], Part | Awaitable[Part]],
    held: Callable[[ClusterView], list[Any]],
    what: str,
) -> None:
    async def add(
        request: Request, cluster_id: ClusterId, body: Any, identity: Who
    ) -> dict[str, Any]:
        view = await _view(request, identity, cluster_id)
        if len(held(view)) >= MAX_PARTS:
            raise RequestError(409, f"the cluster has {MAX_PARTS} {kind}, the most", "name")
        part = build(view, body, request)
        if not isinstance(part, Resource | Service | FencingDevice | Policy):
            part = await part
        return asdict(await _store(request).add_part(part))

    async def listed(
        request: Request, cluster_id: ClusterId, identity: Who
    ) -> list[dict[str, Any]]:
        return [asdict(p) for p in held(await _view(request, identity, cluster_id))]

    async def delete(
        request: Request, cluster_id: ClusterId, item_id: ItemId, identity: Who
    ) -> Response:
        await _view(request, identity, cluster_id)
        if not await _store(request).delete_part(cluster_id, kind, item_id):
            raise RequestError(404, f"no {what} {item_id} in this cluster", "item_id")
        return Response(status_code=204)

    add.__annotations__["body"] = body_type  # the model FastAPI parses the body with
    path = f"/{{cluster_id}}/{kind}"
    router.post(path, status_code=201, summary=f"Add a {what}", responses=CONFLICT)(add)
    router.get(path, summary=f"A cluster's {kind}")(listed)
    router.delete(path + "/{item_id}", status_code=204, summary=f"Remove a {what}")(delete)


_part_routes("resources", ResourceIn, _resource, lambda v: v.resources, "resource")
_part_routes("services", ServiceIn, _service, lambda v: v.services, "service")
_part_routes("fencing-devices", FencingDeviceIn, _fencing, lambda v: v.fencing, "fencing device")
_part_routes("policies", PolicyIn, _policy, lambda v: v.policies, "policy")
