"""Server-group messaging across the processes of a scaled-out deployment.

A host's stream ends at one api process, its posts may reach another, and the faults
and fences of hosts happen where the inspector runs. So every change goes to every
process (a broadcast), and each process routes it as embedded mode does but delivers
only to the hosts whose stream it holds: what the hosts post, the fences of hosts, the
roles the service announces, the messages the service sends one server (a restart). The
VIM's changes (servers, and hosts marked down) need no relay: every process follows the
VIM itself. Each
process thus keeps the same view (peer states, services' health, who is in which
group), answers status requests from it, and each down message leaves exactly one
process: the one holding the host's stream.

The transport is `publish` (one body to every process, this one included) and
`received` (each body, as every process gets it); `app.guestlink` puts them on the
broker. Sending never waits: what is to go is queued (bounded: beyond, dropped and
counted) and published in batches by `run`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from opendoctor.heartbeat.router import Message, Router

log = logging.getLogger(__name__)

Publish = Callable[[bytes], Awaitable[None]]
BATCH = 200


class Relay:
    def __init__(self, router: Router, publish: Publish, limit: int = 10_000) -> None:
        self.router = router
        self._publish = publish
        self._limit = limit
        self._outbox: deque[Message] = deque()
        self._ready = asyncio.Event()
        self.counts: Counter[str] = Counter()

    # --- what goes out ---------------------------------------------------------------------

    def up(self, host: str, messages: list[Message]) -> None:
        self._put({"kind": "up", "host": host, "messages": messages})

    def host_event(self, event: str, host: str) -> None:
        """`fenced` (or `fault`, `cleared`): what the inspector here knows of a host and
        the others do not (the VIM's view of hosts, every process has)."""
        self._put({"kind": "host", "event": event, "host": host})

    def announce(self, server_id: str, state: str, reason: str | None) -> None:
        self._put({"kind": "announce", "server": server_id, "state": state, "reason": reason})

    def down(self, host: str, message: Message) -> bool:
        self._put({"kind": "down", "host": host, "message": message})
        return True  # on its way: whether a process holds the host's stream, none knows

    def _put(self, item: Message) -> None:
        if len(self._outbox) >= self._limit:
            self.counts["dropped"] += 1
            return
        self._outbox.append(item)
        self._ready.set()

    async def run(self) -> None:
        """Publish what is queued, a batch a message, for good (cancel to stop)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))]
                try:
                    await self._publish(json.dumps(batch, separators=(",", ":")).encode())
                    self.counts["published"] += len(batch)
                except Exception as exc:
                    # Datagrams: lost, as a host that does not read would lose them.
                    self.counts["lost"] += len(batch)
                    log.warning(
                        "server-group messages not relayed",
                        extra={"items": len(batch), "error": str(exc)},
                    )

    # --- what comes in ---------------------------------------------------------------------

    def received(self, body: bytes) -> None:
        try:
            items = json.loads(body)
        except ValueError:
            self.counts["malformed"] += 1
            return
        for item in items if isinstance(items, list) else []:
            try:
                self._apply(item)
            except Exception:
                # Another version's message, or a bug: this item only.
                self.counts["malformed"] += 1
                log.exception("relayed item not applied", extra={"kind": item.get("kind")})
        self.counts["received"] += 1

    def _apply(self, item: dict[str, Any]) -> None:
        kind = item["kind"]
        states = self.router.states
        if kind == "up":
            self.router.handle(item["host"], item["messages"])
        elif kind == "host":
            event = {"fault": states.host_fault, "fenced": states.host_fenced}
            event.get(item["event"], states.host_cleared)(item["host"])
        elif kind == "announce":
            states.announce(item["server"], item["state"], item["reason"])
        elif kind == "down":
            self.router.deliver(item["host"], item["message"])
        else:
            self.counts["malformed"] += 1
