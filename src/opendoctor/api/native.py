"""Native `/v1` routes: resources, faults with their timelines, notifications."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from opendoctor.api.auth import current_identity
from opendoctor.errors import RequestError
from opendoctor.identity import Identity
from opendoctor.inspector.graph import Vertex
from opendoctor.inspector.query import QueryError, parse_query
from opendoctor.service import Service
from opendoctor.store.outbox import OutboxEntry

router = APIRouter(prefix="/v1", tags=["native"])


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise RequestError(403, "this needs the admin role", "X-Roles")


def _notification(entry: OutboxEntry) -> dict[str, Any]:
    event = entry.body.get("reason_data", {}).get("event", {})
    traits = {t[0]: t[2] for t in event.get("traits", [])}
    return {
        "id": entry.id,
        "alarm_id": entry.alarm_id,
        "url": entry.url,
        "instance_id": traits.get("instance_id"),
        "status": entry.status,
        "attempts": entry.attempts,
        "created": entry.created,
        "delivered": entry.delivered,
        "last_error": entry.last_error,
    }


@router.get("/hosts", summary="Compute hosts as the inspector sees them (admin)")
async def list_hosts(
    request: Request, identity: Identity = Depends(current_identity)
) -> list[dict[str, Any]]:
    _admin(identity)
    service = _service(request)
    return [
        dict(asdict(h), servers=len(service.topology.servers_on(h.name)))
        for h in service.topology.hosts.values()
    ]


@router.get("/servers", summary="Servers with their host, project and state")
async def list_servers(
    request: Request,
    identity: Identity = Depends(current_identity),
    host: str | None = Query(None, description="only servers on this host"),
) -> list[dict[str, Any]]:
    topology = _service(request).topology
    servers = topology.servers_on(host) if host else topology.servers.values()
    # Built by hand: dataclasses.asdict deep-copies and is ten times slower.
    return [
        {
            "id": s.id,
            "name": s.name,
            "host": s.host,
            "project_id": s.project_id,
            "status": s.status,
            "endpoint": s.endpoint,
        }
        for s in servers
        if identity.can_see(s.project_id)
    ]


def _vertex(v: Vertex) -> dict[str, Any]:
    return {
        "key": v.key,
        "category": v.category,
        "type": v.type,
        "id": v.id,
        "name": v.name,
        "project": v.project,
        "raw_state": v.raw_state,
        "state": v.aggregated_state,
        "placeholder": v.placeholder,
        "updated": v.updated,
    }


@router.get("/topology", summary="The entity graph, whole or from a root to a depth (admin)")
async def topology(
    request: Request,
    identity: Identity = Depends(current_identity),
    root: str | None = Query(None, description="vertex key to start from, e.g. host:compute1"),
    depth: int = Query(1, ge=0, le=10, description="hops from the root, either direction"),
    limit: int = Query(
        10_000, ge=1, le=1_000_000, description="most vertices without a root (after `query`)"
    ),
    query: str | None = Query(
        None,
        description='a JSON filter on the vertices, e.g. {"==": {"type": "server"}}',
        examples=['{"and": [{"==": {"type": "server"}}, {"in": {"state": ["error"]}}]}'],
    ),
) -> dict[str, Any]:
    """Vertices (key, category, type, name, project, raw and aggregated state) and the
    labelled edges between them: the whole graph, or the subgraph within `depth` hops of
    `root`.

    `query` keeps only the vertices it matches (and the edges whose two ends are both
    kept). It is a tree of one-key JSON objects: `and` / `or` (a list of queries), `not`
    (a query), `==`, `!=`, `<`, `<=`, `>`, `>=`, `in` (a list), `regex` (`re.search`),
    each with one `{field: value}`, and `exists` (a field name). Fields: key, category,
    type, id, name, project, raw_state, state (aggregated), deduced_state, placeholder,
    created, updated and `props.<name>`; `==`, `!=` and `in` on state and category
    ignore case. A query that cannot be compiled answers 400 naming the culprit's JSON
    path, e.g. `query.and[1].==.typ`. Without a root, `limit` applies to the vertices the
    query keeps."""
    _admin(identity)
    keep = None
    if query is not None:
        try:
            keep = parse_query(query)
        except QueryError as exc:
            raise RequestError(400, str(exc), exc.field) from None
    graph = _service(request).graph
    if root is not None:
        if graph.get(root) is None:
            raise RequestError(404, f"no vertex {root!r}", "root")
        vertices, edges = graph.subgraph(root, depth)
        if keep is not None:
            vertices = [v for v in vertices if keep(v)]
    elif keep is None:
        if len(graph) > limit:
            problem = f"the graph has {len(graph)} vertices, over limit={limit}: give a root"
            raise RequestError(400, problem, "root")
        vertices, edges = graph.vertices(), graph.all_edges()
    else:
        vertices = [v for v in graph.vertices() if keep(v)]
        if len(vertices) > limit:
            problem = (
                f"{len(vertices)} vertices match the query, over limit={limit}: "
                "give a root or a narrower query"
            )
            raise RequestError(400, problem, "query")
        edges = graph.all_edges()
    if keep is not None:
        kept = {v.key for v in vertices}
        edges = [e for e in edges if e.source in kept and e.target in kept]
    return {
        "vertices": [_vertex(v) for v in vertices],
        "edges": [{"source": e.source, "target": e.target, "label": e.label} for e in edges],
    }


@router.get("/alarms", summary="Active alarms in the entity graph, with counts (admin)")
async def graph_alarms(
    request: Request,
    identity: Identity = Depends(current_identity),
    history: int = Query(0, ge=0, le=10_000, description="also the newest N raise/clear records"),
) -> dict[str, Any]:
    """Faults' alarms and those the rule templates deduce from them, each with the
    resource it is on and its cause."""
    _admin(identity)
    service = _service(request)
    graph = service.graph
    alarms = []
    counts: dict[str, int] = {}
    for key in sorted(service.fault_graph.alarms | service.engine.alarms.keys()):
        vertex = graph.get(key)
        if vertex is None:
            continue
        on = graph.neighbors(key, "on")
        cause = graph.neighbors(key, "causes", direction="in")
        props = vertex.props or {}
        alarms.append(
            dict(
                _vertex(vertex),
                on=on[0].key if on else props.get("resource"),
                caused_by=cause[0].key if cause else None,
                deduced=bool(props.get("deduced")),
                template=props.get("template"),
                fault_id=props.get("fault_id"),
            )
        )
        counts[vertex.state] = counts.get(vertex.state, 0) + 1
    body: dict[str, Any] = {"alarms": alarms, "counts": counts}
    if history:
        body["history"] = service.alarm_history.recent(history)
    return body


@router.get("/rca/{alarm_id:path}", summary="Root-cause analysis of an alarm (admin)")
async def rca(
    alarm_id: str, request: Request, identity: Identity = Depends(current_identity)
) -> dict[str, Any]:
    """The alarm, what caused it (nearest first) and what it causes, over `causes` edges.

    A fault's alarm id is the fault id; an alarm the templates deduce is
    `<alarm name>@<resource key>`, e.g. `instance.host_down@server:<id>`.
    """
    _admin(identity)
    graph = _service(request).graph
    key = alarm_id if alarm_id.startswith("alarm:") else f"alarm:{alarm_id}"
    alarm = graph.get(key)
    if alarm is None or alarm.category != "ALARM":
        raise RequestError(404, f"no active alarm {alarm_id!r}", "alarm_id")
    causes, effects = graph.causal_chain(key)

    def with_resource(v: Vertex) -> dict[str, Any]:
        on = graph.neighbors(v.key, "on")
        return dict(_vertex(v), on=_vertex(on[0]) if on else None)

    return {
        "alarm": with_resource(alarm),
        "root_cause": with_resource(causes[-1]) if causes else with_resource(alarm),
        "causes": [with_resource(v) for v in causes],
        "effects": [with_resource(v) for v in effects],
    }


@router.get("/faults", summary="Faults, newest first (admin)")
async def list_faults(
    request: Request,
    identity: Identity = Depends(current_identity),
    status: str | None = Query(None, pattern="^(active|cleared)$"),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    _admin(identity)
    service = _service(request)
    if status == "active":
        # Active faults live in the inspector: no database round trip while they unfold.
        active = sorted(service.inspector.active.values(), key=lambda f: -f.started)
        return [f.to_dict() for f in active[:limit]]
    faults = await service.faults.list(status=status, limit=limit)
    return [f.to_dict() for f in faults]


@router.get("/faults/{fault_id}", summary="One fault: timeline, notifications, recovery (admin)")
async def get_fault(
    fault_id: str,
    request: Request,
    identity: Identity = Depends(current_identity),
    notifications: bool = Query(True, description="include every notification's delivery"),
) -> dict[str, Any]:
    _admin(identity)
    service = _service(request)
    fault = next((f for f in service.inspector.active.values() if f.id == fault_id), None)
    if fault is None:
        fault = await service.faults.get(fault_id)
    if fault is None:
        raise RequestError(404, f"no fault {fault_id}", "fault_id")
    data = fault.to_dict()
    if notifications:
        entries = await service.outbox.list(fault_id=fault_id, limit=100_000)
        data["notifications"] = [_notification(e) for e in entries]
    return data


@router.get("/notifications", summary="Notification deliveries (admin)")
async def list_notifications(
    request: Request,
    identity: Identity = Depends(current_identity),
    status: str | None = Query(None, pattern="^(pending|delivered|failed)$"),
    fault_id: str | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
) -> list[dict[str, Any]]:
    _admin(identity)
    entries = await _service(request).outbox.list(fault_id=fault_id, status=status, limit=limit)
    return [_notification(e) for e in entries]


@router.get("/events", summary="Recently accepted southbound events (admin)")
async def list_events(
    request: Request,
    identity: Identity = Depends(current_identity),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    _admin(identity)
    return await _service(request).events.recent(limit)
