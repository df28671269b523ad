"""The HTTP client against our own API's server."""

from __future__ import annotations

import uvicorn

from opendoctor.infra.httpclient import HttpClient


async def test_idle_connections_are_dropped_before_the_api_server_closes_them() -> None:
    """A pooled connection reused just as the server closes it fails the request, and a
    POST (an event, a callback) is not retried: the client must let go first."""
    client = HttpClient()
    try:
        session = client._get_session()
        kept = session.connector._keepalive_timeout  # type: ignore[union-attr]
        server_keeps = uvicorn.Config(app="opendoctor.cli:app").timeout_keep_alive
        assert kept is not None and kept < server_keeps
    finally:
        await client.close()
