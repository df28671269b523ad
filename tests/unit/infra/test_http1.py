"""The callbacks' HTTP/1.1 client against real servers on loopback: aiohttp's, and raw
sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opendoctor.core.egress import EgressPolicy
from opendoctor.infra.http1 import Http1Client
from opendoctor.infra.httpclient import EgressRefused, HttpError
from tests.unit.infra.conftest import Site

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (bodies here always have a Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_posts_are_answered_over_one_kept_connection(site: Site) -> None:
    address, ports = site.address, site.ports
    client = Http1Client(egress=EgressPolicy.of([address]))
    try:
        for i in range(5):
            resp = await client.request("POST", f"http://{address}/ok", json={"n": i})
            assert (resp.status, resp.body, resp.ok) == (200, b"ok", True)
            assert resp.headers["content-type"].startswith("text/plain")
        assert len(ports) == 5 and len(set(ports)) == 1
    finally:
        await client.close()


async def test_only_addresses_the_policy_allows_are_called(site: Site) -> None:
    address, ports = site.address, site.ports
    port = address.split(":")[1]
    refusing = Http1Client(egress=EgressPolicy())
    try:
        for url in (f"http://{address}/ok", f"http://localhost:{port}/ok"):
            with pytest.raises(EgressRefused, match="loopback"):
                await refusing.request("POST", url, content=b"{}")
        assert ports == []  # nothing reached the server
    finally:
        await refusing.close()


async def test_no_redirects_and_no_more_of_an_answer_than_asked(
    site: Site,
) -> None:
    address = site.address
    client = Http1Client(egress=EgressPolicy.of([address]), max_response_bytes=1000)
    try:
        moved = await client.request("POST", f"http://{address}/elsewhere")
        assert moved.status == 302  # not followed: each hop would need its own check
        chatty = await client.request("POST", f"http://{address}/chatty")
        assert (chatty.status, len(chatty.body)) == (200, 1000)
        assert (await client.request("POST", f"http://{address}/ok")).body == b"ok"
    finally:
        await client.close()


async def test_an_answer_of_endless_headers_is_refused_before_the_timeout() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(ConnectionError):
            for i in range(100_000):
                writer.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 100))
                await writer.drain()
        writer.close()

    server, address = await raw_server(endless)
    client = Http1Client(timeout=30.0)
    try:
        with pytest.raises(HttpError, match="bytes of headers"):
            await client.request("POST", f"http://{address}/failure", content=b"{}")
    finally:
        await client.close()
        server.close()


async def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client hangs up
        ended.set()
        writer.close()

    server, address = await raw_server(silent)
    client = Http1Client(timeout=0.2)
    try:
        with pytest.raises(HttpError, match=r"no answer within 0\.2 s"):
            await client.request("POST", f"http://{address}/failure", content=b"{}")
        # Its answer could still come and be read as the next request's: it is closed.
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        await client.close()
        server.close()


async def test_a_kept_connection_the_server_drops_is_replaced_where_a_repeat_is_harmless() -> None:
    """The server answers one request per connection and closes the next without a
    word, as a server does when its idle timer ends just as the request comes. A GET,
    or a callback (its consumer drops repeats), goes again on a new connection; another
    POST is left to its caller: the server may have acted on it."""
    connections = 0

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await read_request(reader)
        writer.close()

    server, address = await raw_server(one_each)
    callbacks = Http1Client(timeout=2.0, resend_unanswered=True)
    plain = Http1Client(timeout=2.0)
    url = f"http://{address}/failure"
    try:
        for _ in range(3):
            assert (await callbacks.request("POST", url, content=b"{}")).status == 200
        assert connections == 3
        for _ in range(2):
            assert (await plain.request("GET", url)).status == 200
        assert connections == 5
        with pytest.raises(HttpError, match="closed the connection without answering"):
            await plain.request("POST", url, content=b"{}")
        assert connections == 5  # not sent again
    finally:
        await callbacks.close()
        await plain.close()
        server.close()


async def test_credentials_go_as_basic_auth_and_the_url_cannot_add_a_header() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()
        writer.close()

    server, address = await raw_server(record)
    client = Http1Client()
    try:
        url = f"http://vnfm:p%40ss@{address}/a b\r\nX-Evil: 1?q=x y"
        resp = await client.request(
            "POST", url, content=b"{}", headers={"x-openstack-request-id": "req-1"}
        )
        assert resp.status == 200
        head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0].startswith(b"POST /a%20b") and head[0].endswith(b"?q=x%20y HTTP/1.1")
        lines = {line.split(b": ", 1)[0].lower(): line.split(b": ", 1)[1] for line in head[1:]}
        assert lines[b"authorization"] == b"Basic " + base64.b64encode(b"vnfm:p@ss")
        assert lines[b"host"] == address.encode() and lines[b"content-length"] == b"2"
        assert lines[b"x-openstack-request-id"] == b"req-1" and b"x-evil" not in lines
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", f"http://{address}/", headers={"x": "a\r\nb: c"})
    finally:
        await client.close()
        server.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_refuses_a_certificate_nobody_vouches_for(tmp_path: Path) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*_self_signed(tmp_path))
    answered = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        answered += 1
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    client = Http1Client()
    try:
        with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request("POST", f"https://127.0.0.1:{port}/failure", content=b"{}")
        assert answered == 0  # the handshake failed before any request
    finally:
        await client.close()
        server.close()


def test_the_service_loop_uvloop_serves_the_same() -> None:
    """The service runs on uvloop, whose transports are not asyncio's classes."""

    async def run() -> tuple[int, int]:
        connections = 0

        async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    break
                writer.write(OK)
                await writer.drain()
            writer.close()

        server, address = await raw_server(keep)
        client = Http1Client()
        try:
            statuses = [
                (await client.request("POST", f"http://{address}/", content=b"{}")).status
                for _ in range(3)
            ]
        finally:
            await client.close()
            server.close()
        assert statuses == [200, 200, 200]
        return connections, len(statuses)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == (1, 3)
