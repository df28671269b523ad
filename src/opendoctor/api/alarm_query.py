"""Aodh's queries over alarms and their history: the complex query (`POST
/v2/query/alarms`, `POST /v2/query/alarms/history`), the simple one's parameters
(`q.field`/`q.op`/`q.value`, for the listings of `api.alarms`) and `/v2/capabilities`,
which tells clients that both are served."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from opendoctor.api.auth import current_identity
from opendoctor.core.errors import RequestError
from opendoctor.core.identity import Identity
from opendoctor.core.query import (
    COMPARISONS,
    MAX_DEPTH,
    MAX_IN,
    MAX_ORDERBY,
    MAX_TERMS,
    Compare,
    Kind,
    Node,
    both,
    parse_filter,
    parse_orderby,
    simple_query,
)
from opendoctor.core.terms import as_bool
from opendoctor.notifier.alarm_query import ALARM_FIELDS, ALARM_SORT, LIST_FIELDS
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.rules import to_api

router = APIRouter()  # included in api.alarms's router, which gives the tag

Caller = Annotated[Identity, Depends(current_identity)]

MAX_LIMIT = 10_000  # rows of one answer; also what a complex query without `limit` gets
MAX_FILTER = 16_384  # characters of a complex query's filter
SORT_HELP = "key or key:asc or key:desc, repeated; keys: "
TIME_OPS = ("lt", "le", "gt", "ge")

HISTORY_COLUMNS: dict[str, Kind] = {
    "event_id": "text",
    "alarm_id": "text",
    "type": "text",
    "detail": "text",
    "timestamp": "time",
    "project_id": "text",
    "user_id": "text",
    "on_behalf_of": "text",
    "severity": "text",
}
# GET /v2/alarms/{id}/history filters on these, as Aodh 23 does.
HISTORY_FIELDS = {k: HISTORY_COLUMNS[k] for k in ("type", "severity", "project_id", "user_id")}
HISTORY_FIELDS["timestamp"] = "time"
HISTORY_SORT = (
    "event_id",
    "alarm_id",
    "on_behalf_of",
    "project_id",
    "user_id",
    "type",
    "timestamp",
    "severity",
)


def _service(request: Request) -> AlarmService:
    return cast(AlarmService, request.app.state.alarms)


Service = Annotated[AlarmService, Depends(_service)]


def simple_terms(
    q_field: Annotated[list[str] | None, Query(alias="q.field")] = None,
    q_op: Annotated[list[str] | None, Query(alias="q.op", description="eq unless said")] = None,
    q_value: Annotated[list[str] | None, Query(alias="q.value")] = None,
) -> list[tuple[str, str, str]]:
    """The simple query's terms, (field, op, value) each."""
    fields, values = q_field or [], q_value or []
    ops = q_op or ["eq"] * len(fields)
    if not len(fields) == len(ops) == len(values):
        raise RequestError(
            400, "q.field, q.op and q.value must be repeated the same number of times", "q"
        )
    return list(zip(fields, ops, values, strict=True))


def list_filter(terms: list[tuple[str, str, str]], identity: Identity) -> Node | None:
    """GET /v2/alarms's terms as a tree. `all_projects` is Aodh's: true asks for every
    project's alarms (an admin's right); an admin lists every project's by default here,
    so false narrows the admin's listing to their own project."""
    everyone: bool | None = None
    rest = []
    for field, op, value in terms:
        if field != "all_projects":
            rest.append((field, op, value))
            continue
        everyone = as_bool(value)
        if everyone is None or op != "eq":
            raise RequestError(400, f"all_projects eq true or false, not {value!r}", "q.value")
    if everyone and not identity.is_admin:
        raise RequestError(403, "only an admin may list every project's alarms", "q.value")
    node = simple_query(rest, LIST_FIELDS)
    named = any(field == "project_id" for field, _, _ in rest)
    if everyone is False and not named:
        node = both(Compare("=", "project_id", identity.project_id), node)
    return node


class ComplexQuery(BaseModel):
    """Aodh's complex query: a filter and an ordering, each a JSON document in a string."""

    model_config = ConfigDict(extra="forbid")

    filter: str | None = Field(
        None,
        max_length=MAX_FILTER,
        description=(
            'JSON, e.g. {"and": [{"=": {"state": "alarm"}}, {">": {"timestamp": '
            '"2024-01-31T00:00:00"}}]}. Operators: '
            + ", ".join(COMPARISONS)
            + f", in (1 to {MAX_IN} values), =~ (RE2, alarms only), and, or, not "
            f"(any case). At most {MAX_TERMS} comparisons, nested at most {MAX_DEPTH} deep."
        ),
    )
    orderby: str | None = Field(
        None,
        max_length=1024,
        description=f'JSON, e.g. [{{"severity": "desc"}}, {{"name": "asc"}}]; at most '
        f"{MAX_ORDERBY} keys. Default: newest first.",
    )
    limit: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description=f"most rows answered (default {MAX_LIMIT})"
    )


_QUERY_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a caller who is not an admin named another project"}
}


@router.post(
    "/v2/query/alarms",
    summary="Query alarms (Aodh's complex query)",
    description="Over the caller's project's alarms (an admin's: every project's). "
    "Fields: " + ", ".join(ALARM_FIELDS) + " (user and project stand for user_id and "
    "project_id). Sort keys: " + ", ".join(ALARM_SORT) + ".",
    responses=_QUERY_ERRORS,
)
async def query_alarms(
    body: ComplexQuery, service: Service, identity: Caller
) -> list[dict[str, Any]]:
    node = None if body.filter is None else parse_filter(body.filter, ALARM_FIELDS, regex=True)
    order = None if body.orderby is None else parse_orderby(body.orderby, ALARM_SORT)
    alarms = service.query(identity, node, order, body.limit or MAX_LIMIT)
    return [to_api(a) for a in alarms]


@router.post(
    "/v2/query/alarms/history",
    summary="Query alarm history (Aodh's complex query)",
    description="Over the changes made on behalf of the caller's project (an admin: all), "
    "deleted alarms' included. Fields: "
    + ", ".join(HISTORY_COLUMNS)
    + ". Sort keys: "
    + ", ".join(HISTORY_SORT)
    + ".",
    responses=_QUERY_ERRORS,
)
async def query_history(
    body: ComplexQuery, service: Service, identity: Caller
) -> list[dict[str, Any]]:
    node = None if body.filter is None else parse_filter(body.filter, HISTORY_COLUMNS)
    order = None if body.orderby is None else parse_orderby(body.orderby, HISTORY_SORT)
    return await service.query_history(identity, node, order, body.limit or MAX_LIMIT)


CAPABILITIES = {
    "api": {
        "alarms:query:simple": True,
        "alarms:query:complex": True,
        "alarms:history:query:simple": True,
        "alarms:history:query:complex": True,
    },
    "alarm_storage": {"storage:production_ready": True},
}


@router.get(
    "/v2/capabilities",
    summary="What the alarm API serves (Aodh's capabilities document)",
)
async def capabilities(identity: Caller) -> dict[str, dict[str, bool]]:
    # The same for everyone, but only for callers who say who they are, as every route.
    return CAPABILITIES


# aodhclient asks for "v2/capabilities/": answered in place, not redirected (a redirect
# would be one more round trip, and keystoneauth follows it only for GET).
router.add_api_route("/v2/capabilities/", capabilities, methods=["GET"], include_in_schema=False)
