"""The HTTP client against our own API's server."""

from __future__ import annotations

import pytest

from opendoctor.app.front import KEEP_ALIVE
from opendoctor.core.egress import EgressDenied, EgressPolicy
from opendoctor.infra.httpclient import EgressRefused, HttpClient, _PolicyResolver
from tests.unit.infra.conftest import Site


async def test_the_api_server_keeps_idle_connections_longer_than_the_client() -> None:
    """A pooled connection reused just as the server closes it fails the request, and a
    POST (an event, a callback) is not retried: the server must let go last."""
    client = HttpClient()
    try:
        session = client._get_session()
        kept = session.connector._keepalive_timeout  # type: ignore[union-attr]
        assert kept is not None and kept < KEEP_ALIVE
    finally:
        await client.close()


async def test_a_client_held_to_the_policy_calls_only_allowed_addresses(site: Site) -> None:
    refusing = HttpClient(egress=EgressPolicy())
    allowing = HttpClient(egress=EgressPolicy.of([site.address]))
    try:
        for url in (
            f"http://{site.address}/ok",
            f"http://localhost:{site.address.split(':')[1]}/ok",
        ):
            with pytest.raises(EgressRefused, match="loopback"):
                await refusing.post(url)
        assert (await allowing.post(f"http://{site.address}/ok")).body == b"ok"
    finally:
        await refusing.close()
        await allowing.close()


async def test_names_are_judged_on_the_addresses_they_resolve_to() -> None:
    """The check the connection is made with: a name that leads to loopback is refused
    whatever it is called, and nothing is left to connect to."""
    resolver = _PolicyResolver(EgressPolicy())
    try:
        with pytest.raises(EgressDenied, match="loopback"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_no_redirects_and_no_more_of_an_answer_than_asked(site: Site) -> None:
    client = HttpClient(egress=EgressPolicy.of([site.address]), max_response_bytes=1000)
    try:
        moved = await client.post(f"http://{site.address}/elsewhere")
        assert moved.status == 302  # not followed: each hop would need its own check
        assert len((await client.post(f"http://{site.address}/chatty")).body) == 1000
        assert (await client.post(f"http://{site.address}/ok")).body == b"ok"  # still serving
    finally:
        await client.close()
