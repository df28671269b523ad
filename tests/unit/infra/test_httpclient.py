"""The HTTP client against our own API's server."""

from __future__ import annotations

from opendoctor.app.server import KEEP_ALIVE
from opendoctor.infra.httpclient import HttpClient


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
