"""The FastAPI application: routes, error handling, metrics, and the service's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opendoctor import __version__
from opendoctor.api import (
    alarms,
    audit,
    events,
    fence_devices,
    fenix,
    graph,
    haas,
    hostlink,
    masakari,
    mistral,
    monitors,
    native,
    stream,
    templates,
)
from opendoctor.api.auth import Monitors
from opendoctor.api.bounds import BodyLimit
from opendoctor.api.errors import install_error_handlers
from opendoctor.api.facade import Facade
from opendoctor.api.ratelimit import RateLimit
from opendoctor.api.schema import declare_errors
from opendoctor.core.settings import ApiSettings
from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.keystone import Keystone, KeystoneError, ServiceUser

log = logging.getLogger(__name__)


def create_app(service: Facade, manage: bool = True) -> FastAPI:
    """The API over `service` (`app.Service.facade`). With `manage`, the app starts and
    stops the service."""

    keystone = _keystone(service.settings.api)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start()
        if keystone is not None and service.settings.api.keystone.register_in_catalog:
            await _register(keystone, service.settings.api)
        try:
            yield
        finally:
            if manage:
                await service.stop()
            if keystone is not None:
                await keystone.http.close()

    app = FastAPI(
        title="opendoctor",
        version=__version__,
        description="Fault management and high availability for virtualised infrastructure.",
        lifespan=lifespan,
    )
    api = service.settings.api
    app.state.service = service
    app.state.settings = service.settings
    app.state.monitors = Monitors.load(api)
    app.state.keystone = keystone
    app.state.events_rate = RateLimit(api.events_rate, api.events_burst)
    app.state.alarms = service.alarms
    app.state.intake = events.ServiceIntake(service)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=api.max_body_bytes)
    # Outside the body limit: a change refused as too large is on the trail too.
    app.add_middleware(audit.AuditTrail, service=service)
    if service.runs("api"):
        # A process of a split deployment without the api role serves only /health and
        # /metrics: what it would answer (its alarms, its hosts) is not its job to keep.
        app.include_router(events.router)
        app.include_router(alarms.router)
        app.include_router(native.router)
        app.include_router(graph.router)
        app.include_router(templates.router)
        app.include_router(audit.router)
        app.include_router(fence_devices.router)
        app.include_router(mistral.router)
        app.include_router(fenix.router)
        app.include_router(stream.router)
        masakari.include(app)
        monitors.include(app)
        haas.include(app, service)
        if service.settings.guestlink.enabled:
            hostlink.include(app, service.hostlink)
        _declare_schemas(app)

    @app.get("/health", tags=["operations"], summary="Liveness and readiness")
    async def health(request: Request) -> dict[str, Any]:
        svc: Facade = request.app.state.service
        return {
            "status": "ok" if svc.started else "starting",
            "version": __version__,
            **svc.health(),
        }

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _declare_schemas(app: FastAPI) -> None:
    """Add the models of hand-parsed bodies, and every error status, to the document."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            event_schema = events.DoctorEvent.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(event_schema.pop("$defs", {}))
            components["DoctorEvent"] = event_schema
            app.openapi_schema = declare_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# The catalog types opendoctor answers for: Aodh's, its own, Masakari's (under its path,
# api.masakari.PREFIX), Mistral's and Fenix's (its clients add `/maintenance`,
# `/instance` to the endpoint, as Doctor's VNF manager does).
CATALOG = (
    ("aodh", "alarming", ""),
    ("opendoctor", "fault-management", ""),
    ("masakari", "instance-ha", f"{masakari.PREFIX}/v1"),
    ("mistral", "workflowv2", "/v2"),
    ("fenix", "maintenance", "/v1"),
)


def _keystone(api: ApiSettings) -> Keystone | None:
    if api.auth_mode != "keystone":
        return None
    ks = api.keystone
    user = ServiceUser(
        ks.auth_url,
        ks.username,
        ks.password.get_secret_value(),
        ks.project,
        ks.user_domain,
        ks.project_domain,
    )
    return Keystone(user, HttpClient(timeout=5.0), cache_seconds=ks.cache_seconds)


async def _register(keystone: Keystone, api: ApiSettings) -> None:
    """Put opendoctor in the catalog; a catalog it may not change is worth a warning,
    not a service that does not start (an operator may have registered it by hand)."""
    url = api.keystone.public_url or f"http://{api.host}:{api.port}"
    for name, type_, path in CATALOG:
        try:
            where = url.rstrip("/") + path if path else url
            await keystone.register(name, type_, where, api.keystone.region)
        except KeystoneError as exc:
            log.warning(
                "not registered in the Keystone catalog", extra={"type": type_, "error": str(exc)}
            )
