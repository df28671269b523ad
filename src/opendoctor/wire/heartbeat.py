"""Codec of the guest heartbeat protocol (see docs/guest-heartbeat.md).

One JSON object per line. The base layer names a message group so that several
services share one guest channel: "heartbeat" (challenges and health), "server-group"
(datagrams between the members of a server group, peer states, status queries) and
"service" (restarting one of the guest's services). Every PDU of these is checked here.
Sans-IO except for `LineReader`, so the host (asyncio.Protocol) and the agent
(asyncio streams) share the same framing rules.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection
from typing import Any

VERSION = 1
REVISION = 1
GROUP_HEARTBEAT = "heartbeat"
GROUP_SERVER_GROUP = "server-group"
GROUP_SERVICE = "service"
GROUPS = (GROUP_HEARTBEAT, GROUP_SERVER_GROUP, GROUP_SERVICE)
MAX_LINE = 65536  # bytes, including the terminating newline

INIT = "init"
INIT_ACK = "init-ack"
CHALLENGE_REQUEST = "challenge-request"
CHALLENGE_RESPONSE = "challenge-response"
EXIT = "exit"
PDU_TYPES = (INIT, INIT_ACK, CHALLENGE_REQUEST, CHALLENGE_RESPONSE, EXIT)
# server-group: guest -> host
SEND = "send"
STATUS_REQUEST = "status-request"
# server-group: host -> guest
MESSAGE = "message"
PEER_STATE = "peer-state"
STATUS_RESPONSE = "status-response"
ERROR = "error"
# service
RESTART_REQUEST = "restart-request"
RESTART_RESPONSE = "restart-response"

MAX_MS = 86_400_000  # a day: anything longer is a typo, not a heartbeat
MAX_SEQ = 2**63 - 1
MAX_CHALLENGE = 128
MAX_ID = 255
MAX_PAYLOAD = 3050  # bytes of UTF-8: a datagram that fits one 1,500-byte-MTU pair
MAX_REF = 128  # msg_id, request_id
MAX_SERVICE_NAME = 64
MAX_SERVICES = 32
MAX_PEERS = 256
MAX_STATE = 32
MAX_TEXT = 1024  # reasons and details: operators read them, nobody needs more
SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
ERROR_CODES = ("not-member", "unknown-group", "too-large", "rate-limited", "unknown-instance")


class ProtocolError(ValueError):
    """A message that breaks the protocol; `kind` is short enough to be a counter name."""

    def __init__(self, kind: str, message: str, ref: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.detail = message
        # The msg_id or request_id of a refused PDU, so that its sender can be answered.
        self.ref = ref


# Field checks return an error message, or None when the value is acceptable.
Check = Callable[[Any], str | None]


def _text(limit: int, empty: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return "must be a string"
        if not empty and not v:
            return "must not be empty"
        return f"longer than {limit} characters" if len(v) > limit else None

    return check


def _opt_text(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else "must be a string or null"


def _opt(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _service_name(v: Any) -> str | None:
    problem = _text(MAX_SERVICE_NAME)(v)
    if problem is None and not SERVICE_CHARS.issuperset(v):
        return "may hold only letters, digits and . _ - @"
    return problem


def _payload(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    try:
        size = len(v.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    if size > MAX_PAYLOAD:
        # Not a broken PDU but a refused one: validate_pdu lets its sender know.
        raise ProtocolError("too-large", f"payload of {size} bytes exceeds {MAX_PAYLOAD}")
    return None


def _list_of(schema: dict[str, tuple[Check, bool]], most: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return "must be a list"
        if len(v) > most:
            return f"has more than {most} items"
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                return f"item {i} must be an object"
            problem = _fields(schema, item)
            if problem is not None:
                return f"item {i}: {problem}"
        return None

    return check


def _unique_names(check: Check) -> Check:
    def unique(v: Any) -> str | None:
        problem = check(v)
        if problem is None and len({item["name"] for item in v}) != len(v):
            return "names the same service twice"
        return problem

    return unique


def _fields(schema: dict[str, tuple[Check, bool]], body: dict[str, Any]) -> str | None:
    for name, (check, required) in schema.items():
        if name not in body:
            if required:
                return f"missing field {name!r}"
            continue
        problem = check(body[name])
        if problem is not None:
            return f"{name} {problem}"
    return None


def _integer(low: int, high: int) -> Check:
    def check(v: Any) -> str | None:
        # bool is an int subclass in Python but not a number on the wire.
        if not isinstance(v, int) or isinstance(v, bool):
            return "must be an integer"
        return None if low <= v <= high else f"must be between {low} and {high}"

    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _hex(v: Any) -> str | None:
    problem = _text(MAX_CHALLENGE)(v)
    if problem is None and not all(c in "0123456789abcdefABCDEF" for c in v):
        return "must be hexadecimal"
    return problem


_MS = _integer(0, MAX_MS)
_SEQ = _integer(0, MAX_SEQ)
_ID = _text(MAX_ID)
_REF = _text(MAX_REF)
_REASON = _opt(_text(MAX_TEXT, empty=True))

SERVICE_SCHEMA: dict[str, tuple[Check, bool]] = {
    "name": (_service_name, True),
    "healthy": (_boolean, True),
    "reason": (_REASON, False),
}
PEER_SCHEMA: dict[str, tuple[Check, bool]] = {
    "id": (_ID, True),
    "name": (_text(MAX_ID, empty=True), True),
    "group": (_ID, True),
    "state": (_text(MAX_STATE), True),
    "host": (_opt(_ID), False),
}

# type -> {field: (check, required)}
_SCHEMA: dict[str, dict[str, tuple[Check, bool]]] = {
    INIT: {
        "instance_id": (_text(MAX_ID), True),
        "agent": (_text(MAX_ID, empty=True), True),
        "heartbeat_interval_ms": (_MS, True),
        "response_timeout_ms": (_MS, True),
        "health_check": (_boolean, True),
    },
    INIT_ACK: {
        "instance_id": (_text(MAX_ID), True),
        "heartbeat_interval_ms": (_MS, True),
        "response_timeout_ms": (_MS, True),
    },
    CHALLENGE_REQUEST: {"seq": (_SEQ, True), "challenge": (_hex, True)},
    CHALLENGE_RESPONSE: {
        "seq": (_SEQ, True),
        "challenge": (_hex, True),
        "healthy": (_boolean, True),
        "reason": (_opt_text, False),
        "services": (_unique_names(_list_of(SERVICE_SCHEMA, MAX_SERVICES)), False),
    },
    EXIT: {"reason": (_opt_text, False)},
}

_GROUP_SCHEMA: dict[str, dict[str, tuple[Check, bool]]] = {
    SEND: {"group": (_opt(_ID), False), "payload": (_payload, True), "msg_id": (_opt(_REF), False)},
    STATUS_REQUEST: {"request_id": (_REF, True), "group": (_opt(_ID), False)},
    MESSAGE: {
        "from": (_ID, True),
        "group": (_ID, True),
        "payload": (_payload, True),
        "msg_id": (_REF, True),
    },
    PEER_STATE: {
        "group": (_ID, True),
        "peer": (_ID, True),
        "peer_name": (_text(MAX_ID, empty=True), False),
        "state": (_text(MAX_STATE), True),
        "host": (_opt(_ID), False),
        "reason": (_REASON, False),
    },
    STATUS_RESPONSE: {
        "request_id": (_REF, True),
        "peers": (_list_of(PEER_SCHEMA, MAX_PEERS), True),
    },
    ERROR: {
        "ref": (_opt(_REF), False),
        "code": (_text(MAX_STATE), True),
        "detail": (_REASON, False),
    },
}

_SERVICE_SCHEMA: dict[str, dict[str, tuple[Check, bool]]] = {
    RESTART_REQUEST: {
        "request_id": (_REF, True),
        "service": (_service_name, True),
        "timeout_ms": (_MS, True),
    },
    RESTART_RESPONSE: {
        "request_id": (_REF, True),
        "ok": (_boolean, True),
        "reason": (_REASON, False),
    },
}

_SCHEMAS = {
    GROUP_HEARTBEAT: _SCHEMA,
    GROUP_SERVER_GROUP: _GROUP_SCHEMA,
    GROUP_SERVICE: _SERVICE_SCHEMA,
}


def validate_pdu(body: dict[str, Any], group: str = GROUP_HEARTBEAT) -> None:
    """Check a PDU of one of `GROUPS`. Unknown extra fields are allowed (later revisions
    add some). An oversized payload is a "too-large" error naming the PDU's msg_id, so
    that the sender can be told; anything else wrong is "bad-pdu"."""
    schema = _SCHEMAS[group]
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in schema:
        raise ProtocolError("bad-pdu", f"unknown {group} PDU type {str(kind)[:64]!r}")
    try:
        problem = _fields(schema[kind], body)
    except ProtocolError as exc:
        ref = body.get("msg_id")
        ref = ref if isinstance(ref, str) and 0 < len(ref) <= MAX_REF else None
        raise ProtocolError(exc.kind, f"{kind}: {exc.detail}", ref) from None
    if problem is not None:
        raise ProtocolError("bad-pdu", f"{kind}: {problem}")


def negotiate(proposed_ms: int, default: float, low: float, high: float) -> float:
    """The host's answer (seconds) to one timing proposed in `init`: its own default
    for 0, otherwise the proposal clamped into [low, high]. For the response timeout,
    `high` is at most the negotiated interval: one challenge outstanding at a time."""
    if proposed_ms == 0:
        return default
    return min(max(proposed_ms / 1000.0, low), high)


def encode(group: str, body: dict[str, Any]) -> bytes:
    """One framed message, newline included. PDUs of `GROUPS` are checked before sending."""
    if not isinstance(group, str) or not group:
        raise ProtocolError("malformed", "msg_group must be a non-empty string")
    if group in _SCHEMAS:
        validate_pdu(body, group)
    message = {"version": VERSION, "revision": REVISION, "msg_group": group, "body": body}
    try:
        # ensure_ascii keeps lone surrogates encodable; allow_nan=False keeps it real JSON.
        data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise ProtocolError("malformed", f"body is not JSON-serialisable: {exc}") from None
    if len(data) > MAX_LINE:
        raise ProtocolError("too-long", f"message of {len(data)} bytes exceeds {MAX_LINE}")
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(
    line: bytes, *, known_groups: Collection[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Parse one line (with or without its newline) into (msg_group, body).

    Every failure is a ProtocolError: a peer's bytes must never raise anything else.
    With `known_groups`, a group outside it is an "unknown-group" error.
    """
    if len(line) > MAX_LINE:
        raise ProtocolError("too-long", f"line of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise ProtocolError("malformed", "JSON nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError("malformed", f"not a JSON line: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed", "message is not a JSON object")
    version, revision = message.get("version"), message.get("revision")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise ProtocolError("version", f"unsupported version {version!r} (speak {VERSION})")
    # Revisions only add optional fields, so a newer peer is still understood.
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise ProtocolError("version", f"bad revision {revision!r}")
    group, body = message.get("msg_group"), message.get("body")
    if not isinstance(group, str) or not group:
        raise ProtocolError("malformed", "msg_group must be a non-empty string")
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "body must be a JSON object")
    if known_groups is not None and group not in known_groups:
        raise ProtocolError("unknown-group", f"unknown message group {group[:64]!r}")
    if group in _SCHEMAS:
        validate_pdu(body, group)
    return group, body


class RateLimit:
    """Token bucket over received lines: past it a peer is flooding (see the docs)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens = rate, float(burst), float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class LineSplitter:
    """Cuts a byte stream into lines of at most `max_line` bytes (newline included).

    A line that grows past the limit raises "too-long" as soon as that is known, and
    its remaining bytes are dropped up to the next newline: memory stays bounded by
    the limit plus one fed chunk, whatever the peer sends.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._start = 0
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held for lines not yet returned."""
        return len(self._buf) - self._start

    def next_line(self) -> bytes | None:
        """The next complete line without its newline, or None until more data is fed."""
        end = self._buf.find(b"\n", self._start)
        if self._discarding:
            if end < 0:
                self._buf.clear()
                self._start = 0
                return None
            self._discarding = False
            self._start = end + 1
            end = self._buf.find(b"\n", self._start)
        if end < 0:
            del self._buf[: self._start]
            self._start = 0
            if len(self._buf) >= self.max_line:
                self._buf.clear()
                self._discarding = True
                raise ProtocolError("too-long", f"line longer than {self.max_line} bytes")
            return None
        line = bytes(self._buf[self._start : end])
        self._start = end + 1
        if len(line) >= self.max_line:
            raise ProtocolError(
                "too-long", f"line of {len(line) + 1} bytes exceeds {self.max_line}"
            )
        return line


class LineReader:
    """Reads lines from an asyncio.StreamReader, never holding more than ~2 x max_line."""

    def __init__(self, reader: asyncio.StreamReader, max_line: int = MAX_LINE) -> None:
        self._reader = reader
        self._lines = LineSplitter(max_line)
        self._chunk = max_line

    async def readline(self) -> bytes | None:
        """The next line without its newline; None at end of stream (a partial last line
        is dropped). Raises ProtocolError("too-long"); reading may go on after it."""
        while True:
            line = self._lines.next_line()
            if line is not None:
                return line
            data = await self._reader.read(self._chunk)
            if not data:
                return None
            self._lines.feed(data)
