"""`/v1` routes over the entity graph: topology (read, add to, remove from), the alarms
in it with their history, and root-cause analysis (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from opendoctor.api.audit import audit_target
from opendoctor.api.auth import current_identity
from opendoctor.api.native import inspecting, require_admin, service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.inspector.graph import Vertex, topology_file
from opendoctor.inspector.graph.query import QueryError, parse_query

router = APIRouter(prefix="/v1", tags=["entity graph"])


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


@router.get(
    "/topology",
    summary="The entity graph, whole or from a root to a depth (a project: its own part)",
)
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
    (a query), `==`, `!=`, `<`, `<=`, `>`, `>=`, `in` (a list), `regex` (a search in
    linear time, by RE2: no backreferences or lookaround), each with one
    `{field: value}`, and `exists` (a field name). Fields: key, category,
    type, id, name, project, raw_state, state (aggregated), deduced_state, placeholder,
    created, updated and `props.<name>`; `==`, `!=` and `in` on state and category
    ignore case. A query that cannot be compiled answers 400 naming the culprit's JSON
    path, e.g. `query.and[1].==.typ`. Without a root, `limit` applies to the vertices the
    query keeps.

    A project's caller gets the part of the graph that is its own (its servers, and
    what else carries its project): never the hosts, switches or other projects."""
    keep = None
    if query is not None:
        try:
            keep = parse_query(query)
        except QueryError as exc:
            raise RequestError(400, str(exc), exc.field) from None
    if not identity.is_admin:
        asked, project = keep, identity.project_id
        keep = (
            (lambda v: v.project == project)
            if asked is None
            else (lambda v: v.project == project and asked(v))
        )
    graph = service_of(request).graph
    if root is not None:
        start = graph.get(root)
        # A project learns nothing of what is not its own, not even that it exists.
        if start is None or (keep is not None and not identity.is_admin and not keep(start)):
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
    require_admin(identity)
    service = inspecting(request, "the alarm graph")
    graph = service.graph
    alarms = []
    counts: dict[str, int] = {}
    for key in sorted(service.alarm_keys()):
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
        body["history"] = service.alarm_history(history)
    return body


@router.get("/rca/{alarm_id:path}", summary="Root-cause analysis of an alarm (admin)")
async def rca(
    alarm_id: str, request: Request, identity: Identity = Depends(current_identity)
) -> dict[str, Any]:
    """The alarm, what caused it (nearest first) and what it causes, over `causes` edges.

    A fault's alarm id is the fault id; an alarm the templates deduce is
    `<alarm name>@<resource key>`, e.g. `instance.host_down@server:<id>`.
    """
    require_admin(identity)
    graph = inspecting(request, "root-cause analysis").graph
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


@router.post("/topology", summary="Add entities and relations the VIM does not know (admin)")
async def add_topology(
    body: topology_file.TopologyIn,
    request: Request,
    identity: Identity = Depends(current_identity),
) -> dict[str, Any]:
    """Switches, racks, power feeds, ports and how they connect: the same shape as the
    topology file (`entities`, `relations`). Existing vertices are updated; relations
    to vertices nobody has reported yet make placeholders, listed under `warnings`. The
    rule templates act on the change at once (a new link to a failed switch, say).

    What is added here is stored: every inspector of a scaled-out deployment takes it up
    within `inspector.topology_sync_interval`, and it outlives restarts (applied after
    the topology file)."""
    require_admin(identity)
    service = inspecting(request, "the entity graph")
    loaded = await service.add_topology(body)
    audit_target(request, f"{loaded.entities} entities, {loaded.relations} relations")
    return {"entities": loaded.entities, "relations": loaded.relations, "warnings": loaded.warnings}


@router.delete(
    "/topology/{key:path}",
    status_code=204,
    summary="Remove a vertex the VIM does not own (admin)",
    responses={404: {"description": "no such vertex"}, 409: {"description": "not the API's"}},
)
async def remove_vertex(
    key: str, request: Request, identity: Identity = Depends(current_identity)
) -> Response:
    """Remove an entity added by the topology file or this API, with its edges; what the
    rules deduced through it is undone. Hosts and servers come and go with the VIM, and
    alarms with their faults, so those answer 409."""
    require_admin(identity)
    service = inspecting(request, "the entity graph")
    vertex = service.graph.get(key)
    if vertex is None:
        raise RequestError(404, f"no vertex {key!r}", "key")
    if service.owned_by_vim(key):
        raise RequestError(409, f"{key} is the VIM's: it goes when the VIM deletes it", "key")
    if vertex.category == "ALARM":
        raise RequestError(409, f"{key} is an alarm: it goes when its fault clears", "key")
    await service.remove_vertex(key)
    return Response(status_code=204)
