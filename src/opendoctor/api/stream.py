"""`GET /v1/stream`: what changes, as it happens, as Server-Sent Events (the dashboard).

Each event is three lines and a blank one:

    id: 42
    event: fault.opened
    data: {"id": "...", "type": "compute.host.down", "hostname": "compute1", ...}

(`data`, the event's own, on one line.) A comment line (`: keep-alive`) goes every
`KEEPALIVE` seconds while nothing happens, so that proxies and browsers keep the
connection open. Nothing is replayed: a page reads the state first (`/v1/faults`,
`/v1/topology`), then follows the changes; after a `gap` event (it fell behind and
events were dropped) or a reconnection, it reads the state again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from opendoctor.api.auth import current_identity
from opendoctor.api.native import service_of
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.infra.live import GAP, Allowed, Event, Subscription, Unavailable

router = APIRouter(prefix="/v1", tags=["operations"])

KINDS = frozenset(
    {
        "fault.opened",
        "fault.changed",
        "fault.cleared",
        "graph.vertex",
        "graph.removed",
        "graph.edge",
        "maintenance.session",
        "workflow.execution",
    }
)
# What `kinds` may name; `gap` always comes, and may be named too.
NAMED = KINDS | {GAP}
KEEPALIVE = 15.0
# Events written at once when several wait: one write for a burst, not one each.
BATCH = 100
MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and its kin hold a response back until it is big enough: not this one.
    "X-Accel-Buffering": "no",
}
KEEPALIVE_FRAME = b": keep-alive\n\n"

RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "the events, for as long as the client stays",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    },
    400: {"description": "an unknown kind in `kinds`"},
    401: {"description": "no identity, or one that is not believed"},
    503: {
        "description": "as many streams as the service takes are open already, or it is stopping"
    },
}


def allowed_for(identity: Identity) -> Allowed:
    """What the caller may see: an admin everything; a project only its own events, never
    the infrastructure's (those of no project: hosts, their faults)."""
    if identity.is_admin:
        return lambda project: True
    own = identity.project_id
    return lambda project: project is not None and project == own


def parse_kinds(raw: str | None) -> frozenset[str] | None:
    if raw is None:
        return None
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    unknown = sorted(kinds - NAMED)
    if unknown:
        known = ", ".join(sorted(NAMED))
        raise RequestError(400, f"unknown kinds {', '.join(unknown)} (known: {known})", "kinds")
    return kinds or None


def frame(event: Event) -> bytes:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.data_json()}\n\n".encode()


async def frames(subscription: Subscription, keepalive: float) -> AsyncGenerator[bytes, None]:
    """The stream of one client. It ends the subscription however it ends itself: the
    client leaves (the server cancels it while it waits), or the hub closes."""
    with subscription:
        while True:
            event = await subscription.get(keepalive)
            if event is not None:
                more = subscription.pending(BATCH - 1)
                yield b"".join(frame(e) for e in (event, *more))
            elif subscription.closed:
                return
            else:
                yield KEEPALIVE_FRAME


@router.get(
    "/stream",
    summary="What changes, as it happens: Server-Sent Events (faults, graph, sessions, runs)",
    response_class=StreamingResponse,
    responses=RESPONSES,
)
async def stream(
    request: Request,
    identity: Identity = Depends(current_identity),
    kinds: str | None = Query(
        None,
        max_length=1000,
        description="only these kinds, comma-separated (`gap` always comes)",
        examples=["graph.vertex,fault.opened"],
    ),
) -> StreamingResponse:
    """Server-Sent Events (`text/event-stream`) of what changes in this process, from the
    moment of the request on:

    - `fault.opened`, `fault.changed` (a checkpoint, recovery results), `fault.cleared`:
      `{id, type, hostname, instance_id, status, trace}`;
    - `graph.vertex` `{key, id, type, name, state, raw_state, project}`,
      `graph.removed` `{key}`, `graph.edge` `{source, target, labels}` (an edge from
      one to the other came or went; `labels`: those between them now, none if none);
    - `maintenance.session` `{session_id, state, percent_done, current_host, waiting}`;
    - `workflow.execution` `{id, workflow_name, state, project}`;
    - `gap` `{dropped}`: the client fell behind and events were dropped; read the state
      again.

    Each event is `id:` (growing), `event:` (the kind) and `data:` (the object above,
    as one line of JSON); a comment line comes every 15 s
    while nothing happens. A project sees only events of its own project (its servers,
    their faults, its executions); an admin sees everything, the infrastructure's too
    (hosts, their faults, maintenance). Nothing is replayed: read the state, then
    follow; after a `gap` or a reconnection, read it again."""
    wanted = parse_kinds(kinds)
    try:
        subscription = service_of(request).live.subscribe(allowed_for(identity), wanted)
    except Unavailable as exc:
        raise RequestError(503, str(exc)) from None
    return StreamingResponse(
        frames(subscription, KEEPALIVE),
        media_type=MEDIA_TYPE,
        headers=HEADERS,
        # A client gone before the stream's first step never runs its cleanup.
        background=BackgroundTask(subscription.close),
    )
