"""The heartbeat codec: framing, base layer, PDU validation, and that no input breaks it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendoctor.wire import heartbeat as p

EXAMPLES: list[dict[str, Any]] = [
    {
        "type": "init",
        "instance_id": "vm-1",
        "agent": "opendoctor-guest-agent/0.1",
        "heartbeat_interval_ms": 100,
        "response_timeout_ms": 80,
        "health_check": True,
    },
    {
        "type": "init-ack",
        "instance_id": "vm-1",
        "heartbeat_interval_ms": 100,
        "response_timeout_ms": 80,
    },
    {"type": "challenge-request", "seq": 7, "challenge": "9f86d081884c7d65"},
    {
        "type": "challenge-response",
        "seq": 7,
        "challenge": "9f86d081884c7d65",
        "healthy": True,
        "reason": None,
    },
    {
        "type": "challenge-response",
        "seq": 8,
        "challenge": "ab",
        "healthy": False,
        "reason": "db down",
    },
    {"type": "exit", "reason": "shutting down"},
]


def frame(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def heartbeat(body: Any, **base: Any) -> bytes:
    return frame({"version": 1, "revision": 1, "msg_group": "heartbeat", "body": body, **base})


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda b: f"{b['type']}")
def test_every_pdu_round_trips(body: dict[str, Any]) -> None:
    line = p.encode(p.GROUP_HEARTBEAT, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["version"] == p.VERSION
    assert p.decode(line) == (p.GROUP_HEARTBEAT, body)
    assert p.decode(line.rstrip(b"\n")) == (p.GROUP_HEARTBEAT, body)


def test_other_groups_pass_through_and_can_be_restricted() -> None:
    line = p.encode("vendor-x", {"anything": [1, "two", None]})
    assert p.decode(line) == ("vendor-x", {"anything": [1, "two", None]})
    with pytest.raises(p.ProtocolError) as err:
        p.decode(line, known_groups=[p.GROUP_HEARTBEAT])
    assert err.value.kind == "unknown-group"


def test_newer_revisions_and_extra_fields_are_accepted() -> None:
    body = {**EXAMPLES[2], "future_field": {"x": 1}}
    assert p.decode(heartbeat(body, revision=5, extra="ignored")) == ("heartbeat", body)
    # A missing optional field is fine: reason defaults to none.
    short = {"type": "challenge-response", "seq": 1, "challenge": "00", "healthy": True}
    assert p.decode(heartbeat(short))[1] == short


REJECTED: list[tuple[bytes, str]] = [
    (b"not json\n", "malformed"),
    (b"\xff\xfe{}\n", "malformed"),
    (b"[]\n", "malformed"),
    (b"\n", "malformed"),
    (frame({"version": 1, "revision": 1, "msg_group": "heartbeat"}), "malformed"),
    (frame({"version": 1, "revision": 1, "msg_group": "", "body": {}}), "malformed"),
    (frame({"version": 1, "revision": 1, "msg_group": "heartbeat", "body": []}), "malformed"),
    (b'{"version":1,"revision":1,"msg_group":"x","body":{"v":NaN}}', "malformed"),
    (b"[" * 50_000 + b"]" * 50_000, "too-long"),
    (b"[" * 30_000 + b"]" * 30_000, "malformed"),
    (frame({"version": 2, "revision": 1, "msg_group": "heartbeat", "body": {}}), "version"),
    (frame({"version": True, "revision": 1, "msg_group": "heartbeat", "body": {}}), "version"),
    (frame({"version": 1, "revision": 0, "msg_group": "heartbeat", "body": {}}), "version"),
    (frame({"revision": 1, "msg_group": "heartbeat", "body": {}}), "version"),
    (heartbeat({"type": "reboot"}), "bad-pdu"),
    (heartbeat({"seq": 1}), "bad-pdu"),
    (heartbeat({k: v for k, v in EXAMPLES[0].items() if k != "health_check"}), "bad-pdu"),
    (heartbeat({**EXAMPLES[0], "instance_id": ""}), "bad-pdu"),
    (heartbeat({**EXAMPLES[0], "heartbeat_interval_ms": -1}), "bad-pdu"),
    (heartbeat({**EXAMPLES[0], "heartbeat_interval_ms": 1.5}), "bad-pdu"),
    (heartbeat({**EXAMPLES[0], "health_check": 1}), "bad-pdu"),
    (heartbeat({**EXAMPLES[2], "seq": True}), "bad-pdu"),
    (heartbeat({**EXAMPLES[2], "seq": -1}), "bad-pdu"),
    (heartbeat({**EXAMPLES[2], "challenge": "xyz"}), "bad-pdu"),
    (heartbeat({**EXAMPLES[2], "challenge": "a" * 129}), "bad-pdu"),
    (heartbeat({**EXAMPLES[3], "healthy": "yes"}), "bad-pdu"),
    (heartbeat({**EXAMPLES[3], "reason": 42}), "bad-pdu"),
    (b'{"version":1,"revision":1,"msg_group":"x","body":{"n":' + b"9" * 5000 + b"}}", "malformed"),
]


@pytest.mark.parametrize(("line", "kind"), REJECTED)
def test_bad_lines_are_rejected_with_a_kind(line: bytes, kind: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.decode(line)
    assert err.value.kind == kind
    assert isinstance(err.value, ValueError)


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.encode(p.GROUP_HEARTBEAT, {"type": "challenge-request", "seq": "1", "challenge": "00"})
    assert err.value.kind == "bad-pdu"
    with pytest.raises(p.ProtocolError) as err:
        p.encode("blob", {"data": "x" * p.MAX_LINE})
    assert err.value.kind == "too-long"
    with pytest.raises(p.ProtocolError) as err:
        p.encode("blob", {"data": float("nan")})
    assert err.value.kind == "malformed"
    with pytest.raises(p.ProtocolError):
        p.encode("", {})


def test_splitter_cuts_lines_across_chunks_and_resyncs_after_a_long_one() -> None:
    lines = p.LineSplitter(max_line=16)
    lines.feed(b"abc\nde")
    assert lines.next_line() == b"abc"
    assert lines.next_line() is None
    lines.feed(b"f\n\n")
    assert (lines.next_line(), lines.next_line(), lines.next_line()) == (b"def", b"", None)
    lines.feed(b"x" * 15 + b"\n")  # 16 bytes with its newline: the limit exactly
    assert lines.next_line() == b"x" * 15
    lines.feed(b"y" * 16 + b"\n")
    with pytest.raises(p.ProtocolError, match="too-long"):
        lines.next_line()
    # A runaway line is dropped as it comes, never held.
    lines.feed(b"z" * 40)
    with pytest.raises(p.ProtocolError):
        lines.next_line()
    for _ in range(100):
        lines.feed(b"z" * 1000)
        assert lines.next_line() is None
        assert lines.buffered == 0
    lines.feed(b"zz\nok\n")
    assert lines.next_line() == b"ok"


async def test_line_reader_bounds_what_it_reads_from_a_flooding_stream() -> None:
    reader = asyncio.StreamReader()
    flood = b"x" * (10 * p.MAX_LINE)
    reader.feed_data(flood + b"\n" + p.encode("g", {"a": 1}))
    reader.feed_eof()
    lines = p.LineReader(reader)
    with pytest.raises(p.ProtocolError) as err:
        await lines.readline()
    assert err.value.kind == "too-long"
    # It gave up after about one line's worth instead of swallowing the whole flood ...
    assert not reader.at_eof()
    # ... and, asked again, skips the rest of that line without holding it.
    assert p.decode(await lines.readline() or b"") == ("g", {"a": 1})
    assert await lines.readline() is None


# ---- properties -------------------------------------------------------------------------

hexes = st.text("0123456789abcdef", min_size=1, max_size=64)
ms = st.integers(0, p.MAX_MS)
ids = st.text(min_size=1, max_size=40)
opt_reason = st.one_of(st.none(), st.text(max_size=80))
pdus = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("init"),
            "instance_id": ids,
            "agent": st.text(max_size=40),
            "heartbeat_interval_ms": ms,
            "response_timeout_ms": ms,
            "health_check": st.booleans(),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("init-ack"),
            "instance_id": ids,
            "heartbeat_interval_ms": ms,
            "response_timeout_ms": ms,
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("challenge-request"), "seq": st.integers(0, p.MAX_SEQ), "challenge": hexes}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("challenge-response"),
            "seq": st.integers(0, p.MAX_SEQ),
            "challenge": hexes,
            "healthy": st.booleans(),
        },
        optional={"reason": opt_reason},
    ),
    st.fixed_dictionaries({"type": st.just("exit")}, optional={"reason": opt_reason}),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
other_groups = st.text(min_size=1, max_size=20).filter(lambda g: g != p.GROUP_HEARTBEAT)
messages = st.one_of(
    st.tuples(st.just(p.GROUP_HEARTBEAT), pdus),
    st.tuples(other_groups, st.dictionaries(st.text(max_size=8), json_values, max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_property_decode_inverts_encode(message: tuple[str, dict[str, Any]]) -> None:
    group, body = message
    assert p.decode(p.encode(group, body)) == (group, body)


def decodes_or_refuses(line: bytes) -> None:
    try:
        group, body = p.decode(line)
    except p.ProtocolError as exc:
        assert exc.kind in {"malformed", "too-long", "version", "unknown-group", "bad-pdu"}
        return
    # Whatever it accepts is a valid message: it encodes back without complaint.
    assert p.decode(p.encode(group, body)) == (group, body)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    decodes_or_refuses(data)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.just(1), json_values),
    st.one_of(st.just(1), json_values),
    st.one_of(st.just("heartbeat"), json_values),
    st.one_of(
        pdus,
        st.dictionaries(st.sampled_from(["type", "seq", "challenge", "healthy"]), json_values),
        json_values,
    ),
)
def test_property_near_valid_messages_never_raise_anything_else(
    version: Any, revision: Any, group: Any, body: Any
) -> None:
    message = {"version": version, "revision": revision, "msg_group": group, "body": body}
    decodes_or_refuses(json.dumps(message).encode())
