"""The server-group and service PDUs, and the `services` of a challenge-response."""

from __future__ import annotations

from typing import Any

import pytest

from opendoctor.wire import heartbeat as p

GROUP_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (p.GROUP_SERVER_GROUP, {"type": "send", "group": "g1", "payload": "hello", "msg_id": "m1"}),
    (p.GROUP_SERVER_GROUP, {"type": "send", "payload": ""}),
    (p.GROUP_SERVER_GROUP, {"type": "status-request", "request_id": "r1", "group": None}),
    (
        p.GROUP_SERVER_GROUP,
        {"type": "message", "from": "vm-2", "group": "g1", "payload": "é" * 1525, "msg_id": "m"},
    ),
    (
        p.GROUP_SERVER_GROUP,
        {
            "type": "peer-state",
            "group": "g1",
            "peer": "vm-2",
            "peer_name": "db-2",
            "state": "failed",
            "host": None,
            "reason": "host fenced",
        },
    ),
    (
        p.GROUP_SERVER_GROUP,
        {
            "type": "status-response",
            "request_id": "r1",
            "peers": [{"id": "vm-2", "name": "db-2", "group": "g1", "state": "started"}],
        },
    ),
    (p.GROUP_SERVER_GROUP, {"type": "error", "ref": "m1", "code": "not-member", "detail": "x"}),
    (
        p.GROUP_SERVICE,
        {"type": "restart-request", "request_id": "r2", "service": "web", "timeout_ms": 5000},
    ),
    (p.GROUP_SERVICE, {"type": "restart-response", "request_id": "r2", "ok": True, "reason": None}),
]


@pytest.mark.parametrize(("group", "body"), GROUP_EXAMPLES, ids=lambda x: str(x)[:40])
def test_new_pdus_round_trip(group: str, body: dict[str, Any]) -> None:
    assert p.decode(p.encode(group, body)) == (group, body)


def test_payload_limit_is_3050_bytes_of_utf8_and_names_the_msg_id() -> None:
    body = {"type": "send", "payload": "x" * p.MAX_PAYLOAD, "msg_id": "m-7"}
    p.validate_pdu(body, p.GROUP_SERVER_GROUP)
    body["payload"] = "é" * 1526  # 3,052 bytes in 1,526 characters
    with pytest.raises(p.ProtocolError) as err:
        p.validate_pdu(body, p.GROUP_SERVER_GROUP)
    assert err.value.kind == "too-large" and err.value.ref == "m-7"
    assert "3052 bytes" in err.value.detail


@pytest.mark.parametrize(
    ("group", "body", "problem"),
    [
        (p.GROUP_SERVER_GROUP, {"type": "send"}, "missing field 'payload'"),
        (p.GROUP_SERVER_GROUP, {"type": "send", "payload": 3}, "payload must be a string"),
        (p.GROUP_SERVER_GROUP, {"type": "send", "payload": "", "msg_id": "m" * 129}, "msg_id"),
        (p.GROUP_SERVER_GROUP, {"type": "status-request", "request_id": ""}, "request_id"),
        (p.GROUP_SERVER_GROUP, {"type": "join"}, "unknown server-group PDU type"),
        (
            p.GROUP_SERVER_GROUP,
            {"type": "status-response", "request_id": "r", "peers": [{"id": "x"}] * 257},
            "more than 256",
        ),
        (
            p.GROUP_SERVER_GROUP,
            {"type": "status-response", "request_id": "r", "peers": [1]},
            "item 0",
        ),
        (
            p.GROUP_SERVICE,
            {"type": "restart-request", "request_id": "r", "service": "a b", "timeout_ms": 1},
            "service may hold only",
        ),
        (
            p.GROUP_SERVICE,
            {"type": "restart-request", "request_id": "r", "service": "web", "timeout_ms": -1},
            "timeout_ms",
        ),
        (p.GROUP_SERVICE, {"type": "restart-response", "request_id": "r", "ok": 1}, "ok must"),
    ],
)
def test_bad_pdus_are_refused_naming_the_field(group: str, body: Any, problem: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.validate_pdu(body, group)
    assert err.value.kind == "bad-pdu"
    assert problem in str(err.value)


def _response(services: Any) -> dict[str, Any]:
    return {
        "type": "challenge-response",
        "seq": 1,
        "challenge": "0a",
        "healthy": True,
        "services": services,
    }


def test_challenge_response_services_are_bounded() -> None:
    good = [{"name": f"svc-{i}", "healthy": i % 2 == 0, "reason": None} for i in range(32)]
    p.validate_pdu(_response(good))
    for services, problem in [
        ([*good, {"name": "one-more", "healthy": True}], "more than 32"),
        ([{"name": "web", "healthy": True}] * 2, "same service twice"),
        ([{"name": "x" * 65, "healthy": True}], "longer than 64"),
        ([{"name": "web", "healthy": "yes"}], "healthy must be"),
        ([{"name": "web", "healthy": False, "reason": "r" * 1025}], "reason longer"),
        ("web", "must be a list"),
    ]:
        with pytest.raises(p.ProtocolError, match=problem):
            p.validate_pdu(_response(services))
