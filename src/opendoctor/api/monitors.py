"""Southbound, in other tools' own formats: Alertmanager, Zabbix, collectd.

Each route takes its tool's body as the tool sends it, maps the alerts to events by the
operator's rules (`monitors.*`, docs/monitors.md) and hands them on as `PUT /events`
does (`Facade.submit`: durable, then published). The monitor's token comes as
`X-Auth-Token` or, where the tool can only send that (Alertmanager),
`Authorization: Bearer`; each adapter takes only the monitors named in its settings,
and each monitor's events count against its own rate (`api.events_rate`).

Alerts that are no fault (no rule for them, a host opendoctor does not know) are
answered in `skipped`, not refused: a tool that is refused sends the whole group again
or drops it, and the alerts about hosts opendoctor knows would go with it.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from opendoctor.api.auth import ANONYMOUS, monitor_with
from opendoctor.api.errors import error_body, validation_errors
from opendoctor.api.facade import Facade
from opendoctor.api.ratelimit import refused
from opendoctor.api.schema import inline_defs, request_body
from opendoctor.core.errors import RequestError
from opendoctor.core.model import Event
from opendoctor.core.monitor_settings import AdapterSettings, MonitorsSettings
from opendoctor.monitor import alertmanager, collectd, zabbix
from opendoctor.monitor.alerts import Alert, Holds, Mapper, Skipped
from opendoctor.monitor.formats import Invalid
from opendoctor.monitor.zabbix_api import UnknownZabbixHost, ZabbixApiError, ZabbixReader

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/monitors", tags=["monitors (Alertmanager, Zabbix, collectd)"])


async def sender(request: Request) -> str:
    """The monitor's name, from its X-Auth-Token or its `Authorization: Bearer`."""
    token = request.headers.get("x-auth-token")
    if token is None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()
    return await monitor_with(request, token)


Sender = Annotated[str, Depends(sender)]


class SkippedAlert(BaseModel):
    alert: str
    field: str
    problem: str


class Accepted(BaseModel):
    accepted: list[str]
    skipped: list[SkippedAlert]


class Synced(Accepted):
    problems: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a monitor this adapter does not take (monitors.<tool>.monitors)"},
    413: {"description": "more alerts at once than monitors.<tool>.max_alerts allows"},
    429: {"description": "the monitor is over its rate (api.events_rate): after Retry-After"},
}


def include(app: FastAPI) -> None:
    """The routes, with what they remember between requests: which alerts fire (so that
    one resolving clears nothing another holds) and which collectd values are out of
    bounds (to report only crossings)."""
    settings: MonitorsSettings = app.state.settings.monitors
    app.state.monitor_holds = Holds(settings.max_held)
    app.state.collectd_crossings = collectd.Crossings(settings.max_held)
    app.include_router(router)


def _allowed(reporter: str, name: str, settings: AdapterSettings) -> None:
    # Anonymous monitors and Keystone users were let in by the operator's own settings.
    if reporter == ANONYMOUS or reporter.startswith("keystone:"):
        return
    if "*" in settings.monitors or reporter in settings.monitors:
        return
    allowed = ", ".join(settings.monitors) or "none"
    problem = f"monitor {reporter!r} may not post here (monitors.{name}.monitors: {allowed})"
    raise RequestError(403, problem, "X-Auth-Token")


def _refusal(exc: Invalid) -> JSONResponse:
    errors = []
    for err in validation_errors(list(exc.error.errors())):
        inner = "" if err["field"] == "body" else err["field"]
        field = ".".join(p for p in (exc.prefix, inner) if p) or "body"
        errors.append({"field": field, "problem": err["problem"]})
    return JSONResponse(error_body(400, errors), status_code=400)


async def _hand_on(
    request: Request,
    reporter: str,
    settings: AdapterSettings,
    alerts: list[Alert],
    skipped: list[Skipped],
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    service: Facade = request.app.state.service
    mapper = Mapper(settings, request.app.state.monitor_holds)
    mapped = mapper.map(alerts, service.hosts(), service.servers(), reporter)
    events: list[Event] = mapped.events
    skipped = skipped + mapped.skipped
    if events:
        too_many = refused(request.app.state.events_rate, reporter, len(events))
        if too_many is not None:
            return too_many
        await service.submit(events)
    if skipped:
        log.info(
            "alerts that are no fault",
            extra={
                "monitor": reporter,
                "skipped": len(skipped),
                "first": skipped[0].as_dict(),
            },
        )
    answer = {
        "accepted": [e.id for e in events],
        "skipped": [s.as_dict() for s in skipped],
        **(extra or {}),
    }
    return JSONResponse(answer, status_code=202)


@router.post(
    "/alertmanager",
    summary="Alertmanager's webhook: firing alerts open faults, resolved ones clear them",
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    openapi_extra=request_body(alertmanager.AmWebhook.model_json_schema()),
)
async def from_alertmanager(request: Request, reporter: Sender) -> JSONResponse:
    settings = request.app.state.settings.monitors.alertmanager
    _allowed(reporter, "alertmanager", settings)
    try:
        hook = alertmanager.parse(await request.body(), settings.max_alerts)
    except Invalid as exc:
        return _refusal(exc)
    return await _hand_on(request, reporter, settings, alertmanager.alerts_of(hook), [])


@router.post(
    "/zabbix",
    summary="Zabbix's webhook media type: a problem opens a fault, its recovery clears it",
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    openapi_extra=request_body(zabbix.WebhookBody.model_json_schema()),
)
async def from_zabbix(request: Request, reporter: Sender) -> JSONResponse:
    settings = request.app.state.settings.monitors.zabbix
    _allowed(reporter, "zabbix", settings)
    try:
        body = zabbix.parse(await request.body())
    except Invalid as exc:
        return _refusal(exc)
    if body is None:
        why = Skipped("body", "event_source", "not a trigger's problem or recovery")
        return await _hand_on(request, reporter, settings, [], [why])
    return await _hand_on(request, reporter, settings, [zabbix.alert_of(body)], [])


HostName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^:/]+$")]


@router.post(
    "/zabbix/hosts/{hostname}/sync",
    summary="Read a host's open problems from the Zabbix API and report them",
    description="Each open problem a rule makes a fault is reported; a problem that "
    "Zabbix no longer has, and that opened a fault through this service, clears it.",
    status_code=202,
    response_model=Synced,
    responses={
        **_ERRORS,
        404: {"description": "no such host, here or in Zabbix, or no Zabbix API configured"},
        502: {"description": "the Zabbix API could not be asked, or refused"},
    },
)
async def sync_zabbix(hostname: HostName, request: Request, reporter: Sender) -> JSONResponse:
    settings = request.app.state.settings.monitors.zabbix
    _allowed(reporter, "zabbix", settings)
    service: Facade = request.app.state.service
    if hostname not in service.hosts():
        raise RequestError(404, f"no host {hostname!r} is known", "hostname")
    # Zabbix's name for the host: the one the mapping renames to it, else its own.
    theirs = next((k for k, v in settings.hosts.items() if v == hostname), hostname)
    try:
        problems = await ZabbixReader(settings.api).problems(theirs)
    except UnknownZabbixHost:
        raise RequestError(404, f"Zabbix has no host {theirs!r}", "hostname") from None
    except ZabbixApiError as exc:
        status = 404 if settings.api.url is None else 502
        raise RequestError(status, str(exc), "monitors.zabbix.api") from None
    alerts = zabbix.problem_alerts(theirs, problems)
    holds: Holds = request.app.state.monitor_holds
    open_ids = {a.source_id for a in alerts}
    for source, source_id in sorted(holds.holding(("host", hostname))):
        if source == zabbix.SOURCE and source_id not in open_ids:
            gone = Alert(
                source=source,
                source_id=source_id,
                fields={"host": theirs},
                active=False,
                at=time.time(),
                where=f"held:{source_id}",
                summary="no longer a problem in Zabbix",
            )
            alerts.append(gone)
    extra = {"problems": len(problems)}
    return await _hand_on(request, reporter, settings, alerts, [], extra)


@router.post(
    "/collectd",
    summary="collectd's write_http (Format JSON): notifications, and values past thresholds",
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                inline_defs(collectd.Notification.model_json_schema()),
                                inline_defs(collectd.ValueList.model_json_schema()),
                            ]
                        },
                    }
                }
            },
        }
    },
)
async def from_collectd(request: Request, reporter: Sender) -> JSONResponse:
    settings = request.app.state.settings.monitors.collectd
    _allowed(reporter, "collectd", settings)
    try:
        items = collectd.parse(await request.body(), settings.max_alerts)
    except Invalid as exc:
        return _refusal(exc)
    crossings: collectd.Crossings = request.app.state.collectd_crossings
    alerts, skipped = collectd.alerts_of(items, settings, crossings)
    return await _hand_on(request, reporter, settings, alerts, skipped)
