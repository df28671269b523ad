"""A client of the guest agent's application socket, for applications inside a VM.

Standard library only and synchronous (one blocking socket), so that any Python
program can use it without an event loop:

    with GroupClient("/run/opendoctor/app.sock") as group:
        group.send("leader is web-1")
        for peer in group.status():
            print(peer["name"], peer["state"])
        event = group.receive(timeout=5.0)   # a message, a peer-state or an error

`send` and `status` wait for their own answer; whatever else arrives meanwhile (the
group's messages, peer states, errors about earlier sends) is kept, up to a bound, for
`receive`. Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import deque
from typing import Any

MAX_LINE = 32 * 1024
MAX_KEPT = 1024  # events kept for receive() while waiting for an answer


class GroupError(Exception):
    """The agent or the service refused a request; `code` says why (see the docs)."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class GroupClient:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._buf = bytearray()
        self._kept: deque[dict[str, Any]] = deque(maxlen=MAX_KEPT)

    def __enter__(self) -> GroupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, payload: str, group: str | None = None) -> str:
        """Send a datagram to the group (None: every group of this VM). Returns its
        msg_id once the agent has passed it to the host; refusals the service makes
        later (not-member, rate-limited, ...) come as `error` events with that `ref`."""
        msg_id = uuid.uuid4().hex
        self._write({"type": "send", "payload": payload, "group": group, "msg_id": msg_id})
        self._answer("msg_id", msg_id, "sent", self.timeout)
        return msg_id

    def status(
        self, group: str | None = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """The peers of this VM's groups (or of one), each {id, name, group, state, host}."""
        request_id = uuid.uuid4().hex
        self._write({"type": "status", "request_id": request_id, "group": group})
        answer = self._answer("request_id", request_id, "status-response", timeout or self.timeout)
        peers: list[dict[str, Any]] = answer["peers"]
        return peers

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event (`message`, `peer-state` or `error`), or None after `timeout`."""
        if self._kept:
            return self._kept.popleft()
        return self._read(time.monotonic() + (self.timeout if timeout is None else timeout))

    # ----- plumbing -----------------------------------------------------------------------

    def _write(self, request: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")

    def _answer(self, key: str, ref: str, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline)
            if event is None:
                raise GroupError("timeout", f"no answer within {timeout:g} s")
            if event.get("type") == kind and event.get(key) == ref:
                return event
            if event.get("type") == "error" and event.get("ref") == ref:
                raise GroupError(str(event.get("code")), event.get("detail"))
            self._kept.append(event)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                if not line.strip():
                    continue
                event: dict[str, Any] = json.loads(line)
                return event
            if len(self._buf) > MAX_LINE:
                raise GroupError("protocol", "the agent sent a line that is too long")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("the agent closed the application socket")
            self._buf += data
