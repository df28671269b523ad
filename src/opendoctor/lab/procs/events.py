"""What a lab host tells the events sink: Doctor-format events by HTTP `PUT <url>`.

`EventSender` (a `BatchSender`, which the host link uses too) queues events and sends
them in order, a JSON list per request (one event, or the backlog after an outage),
with `X-Auth-Token` when a token is set. While the sink does not answer 2xx it
retries with exponential backoff; a new sink address ends the backoff at once.
Sending never blocks the caller: `report` only queues.
Standard library only (hosts import it), with its own tiny HTTP/1.1 client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import ssl
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opendoctor.lab.httpmsg import HttpParseError, read_body, read_head

log = logging.getLogger("opendoctor.lab.procs.host")

LIFECYCLE_EXITED = "compute.instance.lifecycle.exited"
MONITOR = "opendoctor-lab-host"

_ids = itertools.count(1)


def utc_iso(ts: float | None = None) -> str:
    """ISO 8601 in UTC with microseconds, e.g. `2024-05-01T10:00:00.123456Z`."""
    when = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_id(hostname: str) -> str:
    """Unique across hosts, restarts of a host, and events of one host."""
    return f"{hostname}-{os.getpid()}-{time.time_ns()}-{next(_ids)}"


def exit_reason(returncode: int) -> str:
    """How a process ended, from asyncio's return code (negative: killed by a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"process exited with signal {name}"
    return f"process exited with code {returncode}"


def lifecycle_event(
    hostname: str, instance_id: str, name: str, status: str, reason: str
) -> dict[str, Any]:
    return {
        "time": utc_iso(),
        "type": LIFECYCLE_EXITED,
        "details": {
            "hostname": hostname,
            "instance_id": instance_id,
            "instance_name": name,
            "status": status,
            "monitor": MONITOR,
            "monitor_event_id": event_id(hostname),
            "reason": reason,
        },
    }


class SinkError(Exception):
    """The sink could not be reached or did not answer HTTP."""


async def http_send(
    method: str, url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0
) -> int:
    """One request on a fresh connection; the answer's status code."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkError(f"not an http(s) URL: {url!r}")
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=tls)
            writer.write(request)
            await writer.drain()
            head = await read_head(reader, response=True)
            while head is not None and 100 <= head.status < 200:
                head = await read_head(reader, response=True)  # interim answers
            if head is None:
                raise SinkError("the sink closed the connection without answering")
            await read_body(reader, head, until_close=True, limit=1024 * 1024)
            return head.status
    except (OSError, TimeoutError, asyncio.IncompleteReadError, HttpParseError) as exc:
        raise SinkError(f"{exc.__class__.__name__}: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()


class BatchSender:
    """A queue of JSON items for one HTTP endpoint, and the task that empties it.

    Items go in order, up to `batch` (and `max_bytes` of JSON) per request, as a JSON
    list or whatever `wrap` makes of it. A 2xx answer takes them off the queue; an answer
    in `drop_statuses` (the endpoint refused the batch and always will) drops them;
    anything else is retried with exponential backoff, which a new URL ends at once.
    """

    def __init__(
        self,
        *,
        method: str = "PUT",
        wrap: Callable[[list[Any]], Any] = lambda batch: batch,
        drop_statuses: frozenset[int] = frozenset(),
        what: str = "events sink",
        max_queue: int = 10_000,
        batch: int = 100,
        max_bytes: int | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.url: str | None = None
        self.token: str | None = None
        self.method, self.what = method, what
        self._wrap = wrap
        self.drop_statuses = drop_statuses
        self.max_queue = max_queue
        self.batch = batch
        self.max_bytes = max_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: deque[tuple[Any, int]] = deque()
        self._wake = asyncio.Event()
        self._reconfigured = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def configure(self, url: str | None, token: str | None) -> None:
        self.url, self.token = url, token
        self._reconfigured.set()
        self._wake.set()

    def put(self, item: Any) -> bool:
        """Queue one item (never waits); False if it was dropped (no URL, queue full)."""
        if self.url is None:
            self.dropped += 1
            return False
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            log.warning("%s queue full (%d): dropping an item", self.what, self.max_queue)
            return False
        size = len(json.dumps(item)) if self.max_bytes is not None else 0
        self._queue.append((item, size))
        self._wake.set()
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pending": len(self._queue),
            "delivered": self.delivered,
            "failures": self.failures,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def _next_batch(self) -> list[Any]:
        items: list[Any] = []
        total = 0
        for item, size in itertools.islice(self._queue, self.batch):
            total += size + 1
            if items and self.max_bytes is not None and total > self.max_bytes:
                break
            items.append(item)
        return items

    async def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            while not (self._queue and self.url):
                self._wake.clear()
                await self._wake.wait()
            batch = self._next_batch()
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["X-Auth-Token"] = self.token
            self._reconfigured.clear()
            body = json.dumps(self._wrap(batch)).encode()
            try:
                status = await http_send(self.method, self.url, body, headers, self.timeout)
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except SinkError as exc:
                status, error = 0, str(exc)
            if error is None or status in self.drop_statuses:
                for _ in batch:
                    self._queue.popleft()
                if error is None:
                    self.delivered += len(batch)
                else:
                    self.dropped += len(batch)
                    log.warning(
                        "%s %s refused %d items: %s", self.what, self.url, len(batch), error
                    )
                self.last_error = error
                delay = self.backoff_initial
                continue
            self.failures += 1
            if self.last_error != error:
                log.warning("%s %s: %s; retrying with backoff", self.what, self.url, error)
            self.last_error = error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconfigured.wait(), delay)
            delay = self.backoff_initial if self._reconfigured.is_set() else delay * 2
            delay = min(delay, self.backoff_max)


class EventSender(BatchSender):
    """The host's queue of events for the sink, and the task that empties it."""

    def report(self, event: dict[str, Any]) -> None:
        """Queue one event (never waits). Without a sink the event is only logged."""
        details = event.get("details", {})
        log.info(
            "event %s %s %s: %s", event.get("type"), details.get("instance_name"),
            details.get("status"), details.get("reason"),
        )  # fmt: skip
        self.put(event)
