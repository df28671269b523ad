"""The hosts' streams of down messages (`GET /v1/hostlink/{host}/stream`), one per host.

Routing must never wait for a host: `deliver` is synchronous and bounded. Each stream
has a queue with a bound; a host that reads too slowly (or not at all) loses what does
not fit, counted in `dropped`, rather than the service holding messages for it without
limit (they are datagrams: best effort). A newer stream for a host replaces the older
one, which ends (a host that reconnected must not have its messages go to a connection
that is dead but not yet noticed).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Any

Message = dict[str, Any]


class HostStream:
    """One host's connection: its messages, in order, to one reader."""

    def __init__(self, host: str, limit: int) -> None:
        self.host = host
        self.opened = time.time()
        self._limit = limit
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def put(self, message: Message) -> bool:
        """Queue a message; False if it was dropped (closed, or the queue is full)."""
        if self.closed:
            return False
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return False
        self._queue.append(message)
        self._ready.set()
        return True

    async def next_batch(self, timeout: float, most: int = 100) -> list[Message]:
        """What waits (up to `most`), as soon as there is some; [] after `timeout`
        seconds of nothing, or once closed."""
        if not self._queue and not self.closed:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return []
        queue = self._queue
        return [queue.popleft() for _ in range(min(most, len(queue)))]

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._ready.set()


class HostStreams:
    """The stream of each host connected to this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._streams: dict[str, HostStream] = {}
        self.counts: Counter[str] = Counter()
        self.closed = False

    def open(self, host: str) -> HostStream:
        """A new stream for `host`, replacing (and ending) the one it had."""
        old = self._streams.get(host)
        if old is not None:
            old.close()
            self.counts["replaced"] += 1
        stream = HostStream(host, self.limit)
        if self.closed:
            stream.close()
        else:
            self._streams[host] = stream
        return stream

    def release(self, stream: HostStream) -> None:
        """The stream's reader went away."""
        stream.close()
        if self._streams.get(stream.host) is stream:
            del self._streams[stream.host]

    def connected(self, host: str) -> bool:
        return host in self._streams

    @property
    def hosts(self) -> list[str]:
        return sorted(self._streams)

    def deliver(self, host: str, message: Message) -> bool:
        """Queue a down message for `host`; False (and counted) if it has no stream here
        or its stream is full."""
        stream = self._streams.get(host)
        if stream is None:
            self.counts["not_connected"] += 1
            return False
        if not stream.put(message):
            self.counts["dropped"] += 1
            return False
        self.counts["queued"] += 1
        return True

    def close(self) -> None:
        """End every stream and take no more (the service stops)."""
        self.closed = True
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
