"""Identity headers are believed only from loopback and the proxies named in settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.core.settings import ApiSettings
from tests.integration.pipeline.conftest import lab_vim, settings_for

ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin"}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "opendoctor.example"])
def test_listening_beyond_loopback_needs_a_named_proxy_or_tokens(host: str) -> None:
    """Anyone who reaches the port could send `X-Roles: admin`: refused at start."""
    with pytest.raises(ValidationError, match="trusted_proxies"):
        ApiSettings(host=host)
    ApiSettings(host=host, trusted_proxies=["192.0.2.1"])
    ApiSettings(host=host, auth_mode="token")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.5.1", "::1", "localhost"])
def test_loopback_needs_nothing_more(host: str) -> None:
    ApiSettings(host=host)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    settings = settings_for(tmp_path, api={"trusted_proxies": ["10.1.0.0/16"]})
    service = Service(settings, vim=lab_vim())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def call_from(service: Service, peer: str) -> httpx.Response:
    app = create_app(service.facade, manage=False)
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://od") as client:
        return await client.get("/v1/faults", headers=ADMIN)


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3"])
async def test_headers_from_loopback_or_a_named_proxy_are_believed(
    service: Service, peer: str
) -> None:
    assert (await call_from(service, peer)).status_code == 200


@pytest.mark.parametrize("peer", ["10.2.0.1", "192.0.2.7", "not-an-address"])
async def test_headers_from_anywhere_else_are_refused(service: Service, peer: str) -> None:
    resp = await call_from(service, peer)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["errors"][0]["field"] == "X-Project-Id"
    assert "trusted_proxies" in error["message"]
