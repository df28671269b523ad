"""The lab's load balancer: an asyncio HTTP/1.1 reverse proxy with pools and members.

Each pool listens on its own virtual IP (VIP) and sends each request to the next
enabled member (round robin), one request per upstream connection, and relays the
answer; clients may keep their connection to the VIP alive. No enabled member: 503.
A member that refuses, resets or answers garbage: 502 (504 if it does not answer in
time), counted, never retried on another member: in the lab, switching members is
the owner's job (UC2). Members that name a server follow it: their address is the
server's, looked up at every request.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.lab.httpmsg import (
    HOP_BY_HOP,
    Head,
    HttpParseError,
    has_body,
    read_body,
    read_head,
    render_head,
)

log = logging.getLogger("opendoctor.lab.manager.lb")

UPSTREAM_TIMEOUT = 10.0
_REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large"}
_REASONS |= {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

# server id -> (name, address, port) of the server now, None if there is no such server.
Locator = Callable[[str], tuple[str, str, int] | None]


@dataclass(slots=True, eq=False)
class Member:
    id: str
    pool_id: str
    address: str
    port: int
    admin_state_up: bool = True
    server_id: str | None = None
    server_name: str | None = None
    requests: int = 0  # answered by this member
    failures: int = 0  # 502/504 because of this member
    last_error: str | None = None

    @property
    def status(self) -> str:
        if not self.admin_state_up:
            return "INACTIVE"
        return "ERROR" if self.last_error is not None else "ACTIVE"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pool_id": self.pool_id,
            "address": self.address,
            "port": self.port,
            "protocol_port": self.port,  # as neutron names it
            "weight": 1,
            "admin_state_up": self.admin_state_up,
            "status": self.status,
            "server_id": self.server_id,
            "server_name": self.server_name,
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_error,
        }


@dataclass(slots=True, eq=False)
class Pool:
    id: str
    name: str
    vip_address: str
    vip_port: int
    members: list[Member] = field(default_factory=list)
    lb_method: str = "ROUND_ROBIN"
    requests: int = 0
    no_member: int = 0  # answered 503
    upstream_errors: int = 0  # answered 502/504
    listener: asyncio.Server | None = None
    clients: set[asyncio.StreamWriter] = field(default_factory=set)
    _next: int = 0

    def pick(self) -> Member | None:
        """The next enabled member, round robin."""
        count = len(self.members)
        for step in range(count):
            member = self.members[(self._next + step) % count]
            if member.admin_state_up:
                self._next = (self._next + step + 1) % count
                return member
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vip_address": self.vip_address,
            "vip_port": self.vip_port,
            "lb_method": self.lb_method,
            "protocol": "HTTP",
            "members": [m.to_json() for m in self.members],
            "stats": {
                "requests": self.requests,
                "no_member": self.no_member,
                "upstream_errors": self.upstream_errors,
            },
        }


def _answer(status: int, text: str, keep: bool, head_only: bool = False) -> bytes:
    body = text.encode()
    head = render_head(
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep else "close"),
        ],
    )
    return head if head_only else head + body


def _forward_headers(head: Head, peer: str, vip: str) -> list[tuple[str, str]]:
    """The request's end-to-end fields, plus the proxy's own."""
    drop = HOP_BY_HOP | head.tokens("connection") | {"content-length", "expect"}
    kept = [(k, v) for k, v in head.headers if k.lower() not in drop]
    if head.get("host") is None:
        kept.insert(0, ("Host", vip))  # HTTP/1.0 clients may leave it out; 1.1 needs it
    forwarded = head.get("x-forwarded-for")
    kept.append(("X-Forwarded-For", f"{forwarded}, {peer}" if forwarded else peer))
    return kept


class LoadBalancer:
    """The pools of one lab; `vip(n)` is the n-th VIP address (n from 1 to 254)."""

    def __init__(self, locate: Locator, vip: Callable[[int], str]) -> None:
        self.pools: dict[str, Pool] = {}
        self._locate = locate
        self._vip = vip

    def free_vip(self) -> str:
        taken = {p.vip_address for p in self.pools.values()}
        for n in range(1, 255):
            address = self._vip(n)
            if address not in taken:
                return address
        raise ValueError("no free VIP address left")

    # ----- configuration ------------------------------------------------------------------

    def new_member(
        self,
        pool_id: str,
        *,
        server_id: str | None = None,
        address: str | None = None,
        port: int | None = None,
        admin_state_up: bool = True,
    ) -> Member:
        """A member for a server (followed wherever it goes) or for a fixed address."""
        member = Member(str(uuid.uuid4()), pool_id, address or "", port or 0, admin_state_up)
        if server_id is not None:
            found = self._locate(server_id)
            if found is None:
                raise KeyError(server_id)
            member.server_id = server_id
            member.server_name, member.address, member.port = found
        return member

    async def add_pool(self, pool: Pool) -> Pool:
        """Start listening on the pool's VIP; OSError if the address cannot be had."""
        self.pools[pool.id] = pool  # its VIP is taken from now on
        try:
            pool.listener = await asyncio.start_server(
                lambda r, w: self._client(pool, r, w), pool.vip_address, pool.vip_port
            )
        except BaseException:
            self.pools.pop(pool.id, None)
            raise
        log.info("pool %s listening on %s:%d", pool.name, pool.vip_address, pool.vip_port)
        return pool

    async def remove_pool(self, pool_id: str) -> Pool | None:
        pool = self.pools.pop(pool_id, None)
        if pool is None:
            return None
        if pool.listener is not None:
            pool.listener.close()
        for writer in list(pool.clients):
            writer.transport.abort()
        if pool.listener is not None:
            await pool.listener.wait_closed()
        return pool

    async def close(self) -> None:
        await asyncio.gather(*(self.remove_pool(p) for p in list(self.pools)))

    def members(self) -> list[Member]:
        return [m for p in self.pools.values() for m in p.members]

    def refresh(self, member: Member) -> Member:
        """Bring a server's member up to date with where its server is."""
        if member.server_id is not None:
            found = self._locate(member.server_id)
            if found is not None:
                member.server_name, member.address, member.port = found
        return member

    # ----- the proxy ----------------------------------------------------------------------

    async def _client(
        self, pool: Pool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        pool.clients.add(writer)
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        try:
            while True:
                try:
                    head = await read_head(reader)
                    if head is None:
                        break
                    if "100-continue" in head.tokens("expect"):
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = await read_body(reader, head)
                except HttpParseError as exc:
                    writer.write(_answer(exc.status, f"{exc}\n", False))
                    break
                keep = head.keep_alive()
                writer.write(await self._forward(pool, head, body, peer_ip, keep))
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            pool.clients.discard(writer)
            writer.close()

    async def _forward(self, pool: Pool, head: Head, body: bytes, peer: str, keep: bool) -> bytes:
        method, target, _ = head.start
        pool.requests += 1
        member = pool.pick()
        if member is None:
            pool.no_member += 1
            text = f"no enabled member in pool {pool.name}\n"
            return _answer(503, text, keep, head_only=method == "HEAD")
        self.refresh(member)
        headers = _forward_headers(head, peer, f"{pool.vip_address}:{pool.vip_port}")
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close"))
        request = render_head(f"{method} {target} HTTP/1.1", headers) + body
        try:
            answer, answer_body = await self._exchange(member, method, request)
        except (OSError, asyncio.IncompleteReadError, HttpParseError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            status = 504 if timed_out else 502
            error = "no answer in time" if timed_out else f"{exc.__class__.__name__}: {exc}"
            member.failures += 1
            member.last_error = error
            pool.upstream_errors += 1
            log.warning("pool %s member %s:%d: %s", pool.name, member.address, member.port, error)
            text = f"member {member.address}:{member.port} failed: {error}\n"
            return _answer(status, text, keep, head_only=method == "HEAD")
        member.requests += 1
        member.last_error = None
        return self._relay(answer, answer_body, method, keep)

    async def _exchange(self, member: Member, method: str, request: bytes) -> tuple[Head, bytes]:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                reader, writer = await asyncio.open_connection(member.address, member.port)
                writer.write(request)
                await writer.drain()
                answer = await read_head(reader, response=True)
                while answer is not None and 100 <= answer.status < 200:
                    answer = await read_head(reader, response=True)  # interim answers
                if answer is None:
                    raise ConnectionResetError("closed without answering")
                body = b""
                if has_body(method, answer.status):
                    body = await read_body(reader, answer, until_close=True)
                return answer, body
        finally:
            if writer is not None:
                writer.close()

    @staticmethod
    def _relay(answer: Head, body: bytes, method: str, keep: bool) -> bytes:
        drop = HOP_BY_HOP | answer.tokens("connection")
        headers = [(k, v) for k, v in answer.headers if k.lower() not in drop]
        if has_body(method, answer.status):
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "keep-alive" if keep else "close"))
        _, status, reason = answer.start
        return render_head(f"HTTP/1.1 {status} {reason}".rstrip(), headers) + body
