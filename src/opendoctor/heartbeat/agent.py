"""Guest agent: the daemon inside a VM that answers the host's heartbeat challenges.

It registers (`init`), then answers every `challenge-request` at once with the latest
result of its health check and of each named service's check (`services`). The checks
run on their own cadence in the background, so a slow check never makes an answer late;
a check that overruns its timeout counts as unhealthy. On a `restart-request` it runs
the service's restart command and answers `restart-response`. With an application
socket (`appsock`) it relays server-group messages between the applications in the VM
and the host. When the channel drops the agent reopens it with backoff and registers
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import tty
from collections.abc import Sequence
from typing import Any

from opendoctor.heartbeat.appsock import AppHub
from opendoctor.heartbeat.services import (
    MAX_REASON,
    Health,
    Service,
    ServiceChecks,
    command_check,
    run_check,
)
from opendoctor.wire import heartbeat as p

log = logging.getLogger("opendoctor.heartbeat")

__all__ = ["MAX_REASON", "GuestAgent", "Health", "Service", "command_health", "open_channel"]

INIT_ACK_TIMEOUT = 2.0  # no answer by then: the host end is not there, reopen
SEND_TIMEOUT = 1.0
BACKOFF_MIN = 0.05
# Server-group sends wait in the channel's buffer up to this much, then are refused.
MAX_BUFFERED = 4 * p.MAX_LINE


class _Channel:
    """A byte stream to the host: a socket connection or an opened character device."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        read_transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.reader, self.writer, self._read_transport = reader, writer, read_transport

    async def send(self, body: dict[str, Any], group: str = p.GROUP_HEARTBEAT) -> None:
        self.writer.write(p.encode(group, body))
        async with asyncio.timeout(SEND_TIMEOUT):
            await self.writer.drain()

    def send_nowait(self, body: dict[str, Any], group: str) -> bool:
        """Queue without waiting; False (nothing queued) while the host is not reading."""
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > MAX_BUFFERED:
            return False
        self.writer.write(p.encode(group, body))
        return True

    def close(self) -> None:
        self.writer.close()
        if self._read_transport is not None:
            self._read_transport.close()


async def _open_device(path: str) -> _Channel:
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            tty.setraw(fd)  # serial consoles: no echo, no line editing, bytes as sent
        write_fd = os.dup(fd)
    except OSError:
        os.close(fd)
        raise
    reader = asyncio.StreamReader(limit=p.MAX_LINE)
    # Two descriptors: closing the read side must not pull the write side from under it.
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    write_transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
    return _Channel(reader, writer, read_transport)


async def open_channel(channel: str) -> _Channel:
    """Open `tcp:HOST:PORT`, a Unix socket path or a character device (or FIFO) path."""
    if channel.startswith("tcp:"):
        host, _, port = channel[4:].rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        return _Channel(reader, writer)
    mode = os.stat(channel).st_mode
    if stat.S_ISSOCK(mode):
        reader, writer = await asyncio.open_unix_connection(channel, limit=p.MAX_LINE)
        return _Channel(reader, writer)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return await _open_device(channel)
    raise OSError(f"{channel} is neither a socket nor a character device")


class GuestAgent:
    def __init__(
        self,
        channel: str,
        instance_id: str,
        health: Health | None = None,
        interval_ms: int = 100,
        timeout_ms: int = 80,
        agent: str = "opendoctor-guest-agent/0.1",
        *,
        health_interval_ms: int | None = None,
        health_timeout: float = 1.0,
        backoff_max: float = 2.0,
        services: Sequence[Service] = (),
        app_socket: str | None = None,
        app_socket_mode: int = 0o600,
    ) -> None:
        self.channel = channel
        self.instance_id = instance_id
        self.interval_ms, self.timeout_ms, self.agent = interval_ms, timeout_ms, agent
        self._health = health
        self._fixed_health_interval = health_interval_ms is not None
        self._health_interval = (health_interval_ms or interval_ms // 2 or 50) / 1000.0
        self._health_timeout = health_timeout
        self._backoff_max = backoff_max
        self.health: tuple[bool, str | None] = (True, None)
        self.negotiated: tuple[int, int] | None = None  # (interval_ms, timeout_ms) from init-ack
        self.registered = asyncio.Event()
        self.answered = 0
        self.services = ServiceChecks(services, health_timeout)
        self.hub = AppHub(app_socket, self._send_up, app_socket_mode) if app_socket else None
        self._stopping = asyncio.Event()
        self._chan: _Channel | None = None
        self._acked: _Channel | None = None  # the channel whose registration the host took
        self._restarts: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Serve until stop(): (re)open the channel, register, answer challenges."""
        checks: asyncio.Task[None] | None = None
        if self._health is not None or self.services:
            # Register with a real result, not an optimistic guess.
            await self._check_all()
            checks = asyncio.create_task(self._health_loop())
        if self.hub is not None:
            await self.hub.start()
        backoff, quiet = BACKOFF_MIN, False
        try:
            while not self._stopping.is_set():
                try:
                    chan = await open_channel(self.channel)
                except (OSError, ValueError) as exc:
                    # Said once per outage: a VM may boot long before its host end exists.
                    level = logging.DEBUG if quiet else logging.WARNING
                    log.log(level, "cannot open %s: %s", self.channel, exc)
                    quiet = True
                else:
                    quiet = False
                    if await self._serve(chan):
                        backoff = BACKOFF_MIN
                if self._stopping.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._stopping.wait()
                backoff = min(backoff * 2, self._backoff_max)
        finally:
            for task in [checks, *self._restarts]:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.hub is not None:
                await self.hub.close()

    async def stop(self, reason: str = "agent stopping") -> None:
        """Tell the host this is a clean exit (not a fault), then close."""
        self._stopping.set()
        chan, self._chan = self._chan, None
        if chan is None:
            return
        with contextlib.suppress(OSError, TimeoutError, p.ProtocolError):
            await chan.send({"type": p.EXIT, "reason": reason})
        chan.close()

    async def _serve(self, chan: _Channel) -> bool:
        """One session on an open channel; True if the host acknowledged registration."""
        self._chan = chan
        acked = False
        try:
            if self._stopping.is_set():
                return False
            await chan.send(
                {
                    "type": p.INIT,
                    "instance_id": self.instance_id,
                    "agent": self.agent,
                    "heartbeat_interval_ms": self.interval_ms,
                    "response_timeout_ms": self.timeout_ms,
                    "health_check": self._health is not None or bool(self.services),
                }
            )
            lines = p.LineReader(chan.reader)
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that lands as its awaitable finishes.
                    async with asyncio.timeout(None if acked else INIT_ACK_TIMEOUT):
                        line = await lines.readline()
                    if line is None:
                        if not self._stopping.is_set():
                            log.info("host closed the channel")
                        return acked
                    if not line.strip():
                        continue
                    group, body = p.decode(line)
                except p.ProtocolError as exc:
                    log.warning("ignoring a bad message from the host: %s", exc)
                    continue
                if group != p.GROUP_HEARTBEAT:
                    self._other_group(group, body)
                    continue
                kind = body["type"]
                if kind == p.CHALLENGE_REQUEST:
                    await self._answer(chan, body)
                elif kind == p.INIT_ACK:
                    acked = True
                    self.negotiated = (body["heartbeat_interval_ms"], body["response_timeout_ms"])
                    interval, timeout = self.negotiated
                    if not self._fixed_health_interval:
                        # Half the interval: "check fails" to "host told" in ~1.5 intervals.
                        self._health_interval = max(interval / 2000.0, 0.01)
                    log.info("registered: interval %d ms, timeout %d ms", interval, timeout)
                    self._acked = chan
                    self.registered.set()
                elif kind == p.EXIT:
                    log.info("host ended supervision: %s", body.get("reason"))
                    return acked
        except TimeoutError:
            # Before the ack: nobody at the host end. After it: the host stopped reading.
            log.warning("host not answering (%s)", "stopped reading" if acked else "no init-ack")
            return acked
        except (OSError, EOFError) as exc:
            if not self._stopping.is_set():
                log.warning("channel lost: %s", exc)
            return acked
        finally:
            if self._acked is chan:
                self._acked = None
            if self._chan is chan:
                self._chan = None
                chan.close()

    def verdict(self) -> tuple[bool, str | None]:
        """What the next answer says: unhealthy if the health check or any service is."""
        healthy, reason = self.health
        services_ok, services_reason = self.services.verdict()
        if services_ok:
            return healthy, None if healthy else reason
        if healthy:
            return False, services_reason
        return False, f"{reason}; {services_reason}"[:MAX_REASON]

    async def _answer(self, chan: _Channel, challenge: dict[str, Any]) -> None:
        healthy, reason = self.verdict()
        body = {
            "type": p.CHALLENGE_RESPONSE,
            "seq": challenge["seq"],
            "challenge": challenge["challenge"],
            "healthy": healthy,
            "reason": reason,
        }
        if self.services:
            body["services"] = self.services.report()
        await chan.send(body)
        self.answered += 1

    def _other_group(self, group: str, body: dict[str, Any]) -> None:
        if group == p.GROUP_SERVER_GROUP and self.hub is not None:
            self.hub.from_host(body)
        elif group == p.GROUP_SERVICE and body["type"] == p.RESTART_REQUEST:
            task = asyncio.create_task(self._restart(body))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
        # Anything else is another service's message on a shared channel.

    async def _restart(self, request: dict[str, Any]) -> None:
        service = request["service"]
        log.warning("host asks to restart %s", service)
        ok, reason = await self.services.restart(service, request["timeout_ms"] / 1000.0)
        log.log(
            logging.INFO if ok else logging.WARNING, "restart of %s: %s", service, reason or "ok"
        )
        answer = {"type": p.RESTART_RESPONSE, "request_id": request["request_id"], "ok": ok}
        answer["reason"] = reason
        chan = self._chan
        if chan is None:
            return  # the host times the request out; it learns the service state anyway
        with contextlib.suppress(OSError, TimeoutError, p.ProtocolError):
            await chan.send(answer, p.GROUP_SERVICE)

    def _send_up(self, body: dict[str, Any]) -> str | None:
        """A server-group PDU from an application to the host; None once queued."""
        chan = self._acked
        if chan is None:
            return "not-connected"
        try:
            return None if chan.send_nowait(body, p.GROUP_SERVER_GROUP) else "busy"
        except p.ProtocolError:
            return "too-large"

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            await self._check_all()

    async def _check_all(self) -> None:
        if self._health is None:
            changed = await self.services.refresh()
        else:
            changed, result = await asyncio.gather(self.services.refresh(), self._check())
            if result != self.health:
                log.info("health: %s", "healthy" if result[0] else f"unhealthy ({result[1]})")
            self.health = result
        for name in changed:
            ok, reason = self.services.results[name]
            log.info("service %s: %s", name, "healthy" if ok else f"unhealthy ({reason})")

    async def _check(self) -> tuple[bool, str | None]:
        assert self._health is not None
        return await run_check(self._health, self._health_timeout)


def command_health(cmd: str, timeout: float = 1.0) -> Health:
    """A health check that runs `cmd` in a shell: exit status 0 is healthy."""
    return command_check(cmd, timeout)
