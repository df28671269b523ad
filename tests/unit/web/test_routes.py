"""The dashboard's shell: served to anyone (it holds no data), under a policy that lets
it run only its own scripts; and what its sign-in needs to know."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.web import routes
from tests.integration.pipeline.conftest import lab_vim, settings_for


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    service = Service(settings_for(tmp_path, api={"auth_mode": "trusted-headers"}), vim=lab_vim())
    app = create_app(service.facade, manage=False)
    routes.mount(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://od") as c:
        yield c


async def test_the_shell_is_served_under_its_policy(client: httpx.AsyncClient) -> None:
    resp = await client.get("/ui/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    policy = resp.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    # Every script it loads is its own: none from elsewhere, none inline.
    assert "<script>" not in resp.text and "https://" not in resp.text
    for src in ("/ui/static/vendor/cytoscape.min.js", "/ui/static/js/app.js"):
        assert f'src="{src}"' in resp.text
    script = await client.get("/ui/static/js/topology.js")
    assert script.status_code == 200 and "cytoscape" in script.text
    assert (await client.get("/ui")).headers["location"] == "/ui/"


async def test_the_sign_in_learns_how_callers_identify_themselves(
    client: httpx.AsyncClient,
) -> None:
    config = (await client.get("/ui/config.json")).json()
    assert config["auth_mode"] == "trusted-headers"
    # `make web` ran (make test depends on it): the libraries are there to be served.
    assert config["libraries"] is True
    assert (await client.get("/ui/static/vendor/chart.umd.js")).status_code == 200


async def test_no_data_without_an_identity(client: httpx.AsyncClient) -> None:
    # The pages' data comes from the API, under its rules: the shell opens no door.
    assert (await client.get("/v1/topology")).status_code == 401
