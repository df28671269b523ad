"""Server-group messaging between agents and a host: the host's limits, the application
socket and its client library, down messages.

Real agents and a real supervisor on real Unix sockets in one event loop; the service
end of the host link is played by the test (it answers the host's up messages).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

from opendoctor.heartbeat.agent import GuestAgent
from opendoctor.heartbeat.groupclient import GroupClient, GroupError
from opendoctor.wire import heartbeat as p
from tests.conftest import eventually

from .conftest import Host, RawGuest, of_type
from .conftest import registered_agent as running


async def test_the_host_sets_from_limits_rate_and_size(make_host: Any) -> None:
    host: Host = make_host(group_rate=1.0, group_burst=3)
    ups: list[dict[str, Any]] = []
    host.sup.relay.uplink = ups.append
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1", interval_ms=60_000, timeout_ms=30_000)
    # Before anything else: a guest claiming to be another VM is sent as itself.
    send = {"type": "send", "payload": "hi", "msg_id": "m0", "from": "vm9", "group": "g"}
    await guest.send(send, p.GROUP_SERVER_GROUP)
    await eventually(lambda: of_type(ups, "group-send"), what="group-send up")
    assert of_type(ups, "group-send") == [
        {"type": "group-send", "from": "vm1", "group": "g", "payload": "hi", "msg_id": "m0"}
    ]
    big = {"type": "send", "payload": "x" * (p.MAX_PAYLOAD + 1), "msg_id": "big"}
    await guest.send_raw(
        p.encode("vendor", big).replace(b'"vendor"', b'"server-group"')  # unchecked on purpose
    )
    errors: list[dict[str, Any]] = []
    while len(errors) < 1:
        msg = await guest.recv()
        assert msg is not None
        if msg["type"] == "error":
            errors.append(msg)
    assert errors[0]["code"] == "too-large" and errors[0]["ref"] == "big"
    for i in range(3):
        await guest.send({"type": "status-request", "request_id": f"r{i}"}, p.GROUP_SERVER_GROUP)
    while True:
        msg = await guest.recv()
        assert msg is not None
        if msg["type"] == "error":
            break
    assert msg["code"] == "rate-limited"
    assert len(of_type(ups, "status-request")) == 2  # burst 3: one send, two requests
    assert host.count("rate_limited") == 1 and host.count("too_large") == 1
    await guest.close()


async def test_two_agents_talk_through_the_host_and_the_client_library(
    host: Host, tmp_path: Path
) -> None:
    """vm1's application sends; the test's "service" routes it to vm2's application."""
    await host.add("vm1", "vm2")
    members = ["vm1", "vm2"]

    def service(message: dict[str, Any]) -> None:
        if message["type"] == "group-send":
            sender = message["from"]
            host.sup.deliver(
                {
                    "type": "group-message",
                    "to": [m for m in members if m != sender],
                    "from": sender,
                    "group": "g1",
                    "payload": message["payload"],
                    "msg_id": message["msg_id"],
                }
            )
        elif message["type"] == "status-request":
            peers = [
                {"id": m, "name": f"{m}-name", "group": "g1", "state": "started"} for m in members
            ]
            host.sup.deliver(
                {
                    "type": "status-response",
                    "to": [message["from"]],
                    "request_id": message["request_id"],
                    "peers": peers,
                }
            )

    host.sup.relay.uplink = service
    socks = {vm: str(tmp_path / f"{vm}.app") for vm in members}
    agents = [GuestAgent(host.sock(vm), vm, app_socket=socks[vm]) for vm in members]
    async with running(agents[0]), running(agents[1]):
        assert stat.S_IMODE(os.stat(socks["vm1"]).st_mode) == 0o600

        def talk() -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
            with GroupClient(socks["vm1"]) as one, GroupClient(socks["vm2"]) as two:
                peers = two.status()
                msg_id = one.send("leader: vm1")
                return two.receive(timeout=5), peers, msg_id

        got, peers, msg_id = await asyncio.to_thread(talk)
        assert got is not None and got["msg_id"] == msg_id  # the id the sender chose
        assert {k: got[k] for k in ("type", "from", "group", "payload")} == {
            "type": "message",
            "from": "vm1",
            "group": "g1",
            "payload": "leader: vm1",
        }
        assert [x["id"] for x in peers] == ["vm1", "vm2"]

        def refused() -> str:
            with GroupClient(socks["vm2"]) as two:
                try:
                    two.send("x" * (p.MAX_PAYLOAD + 1))
                except GroupError as exc:
                    return exc.code
                return "sent"

        assert await asyncio.to_thread(refused) == "too-large"


async def test_an_app_hears_peer_states_and_errors_about_its_sends(
    host: Host, tmp_path: Path
) -> None:
    ups: list[dict[str, Any]] = []
    host.sup.relay.uplink = ups.append
    await host.add("vm1")
    sock = str(tmp_path / "app.sock")
    async with running(GuestAgent(host.sock("vm1"), "vm1", app_socket=sock, app_socket_mode=0o660)):
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        client = await asyncio.to_thread(GroupClient, sock)
        try:
            msg_id = await asyncio.to_thread(client.send, "hello", "g-other")
            up = await eventually(lambda: of_type(ups, "group-send"), what="send up")
            host.sup.deliver(
                {
                    "type": "error",
                    "to": ["vm1"],
                    "ref": up[0]["msg_id"],
                    "code": "not-member",
                    "detail": "vm1 is not in g-other",
                }
            )
            host.sup.deliver(
                {
                    "type": "peer-state",
                    "to": ["vm1"],
                    "group": "g1",
                    "peer": "vm2",
                    "peer_name": "b",
                    "state": "migrated",
                    "host": "host-2",
                    "reason": None,
                }
            )
            error = await asyncio.to_thread(client.receive, 5)
            state = await asyncio.to_thread(client.receive, 5)
        finally:
            client.close()
    assert error is not None and error["code"] == "not-member" and error["ref"] == msg_id
    assert state is not None and state["type"] == "peer-state" and state["state"] == "migrated"


async def test_down_messages_for_unknown_vms_or_malformed_are_counted(host: Host) -> None:
    await host.add("vm1")
    host.sup.deliver(
        {
            "type": "group-message",
            "to": ["vm9"],
            "from": "a",
            "group": "g",
            "payload": "p",
            "msg_id": "m",
        }
    )
    host.sup.deliver({"type": "teleport", "to": ["vm1"]})
    host.sup.deliver({"type": "group-message", "to": "vm1"})
    host.sup.deliver(
        {
            "type": "group-message",
            "to": ["vm1"],
            "from": "a",
            "group": "g",
            "payload": "p",
            "msg_id": "m",
        }
    )
    assert host.count("unknown_instance") == 1
    assert host.count("bad_downlink") == 2
    assert host.count("undeliverable") == 1  # vm1 has no agent connected


async def test_the_app_socket_refuses_bad_requests_and_bounds_connections(
    tmp_path: Path,
) -> None:
    where = tmp_path / "app.sock"
    sock = str(where)
    agent = GuestAgent(str(tmp_path / "no-host.sock"), "vm1", app_socket=sock)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(where.exists, what="the app socket")

        def lone_send() -> str:
            with GroupClient(sock) as client:
                try:
                    client.send("hello")
                except GroupError as exc:
                    return exc.code
            return "sent"

        # No host has taken the agent's registration: nothing can go anywhere.
        assert await asyncio.to_thread(lone_send) == "not-connected"

        reader, writer = await asyncio.open_unix_connection(sock)
        answers = []
        for line in [b"not json\n", b'{"type": "dance"}\n', b'{"type": "send", "payload": 5}\n']:
            writer.write(line)
            answers.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
        assert [a["code"] for a in answers] == ["bad-request"] * 3
        assert "payload must be a string" in answers[2]["detail"]

        others = [await asyncio.open_unix_connection(sock) for _ in range(15)]
        await eventually(lambda: agent.hub is not None and agent.hub.apps == 16, what="16 apps")
        extra_reader, extra_writer = await asyncio.open_unix_connection(sock)
        assert await asyncio.wait_for(extra_reader.read(), 5) == b""  # closed at once
        assert agent.hub is not None and agent.hub.counters["refused"] == 1
        for _, w in [*others, (extra_reader, extra_writer), (reader, writer)]:
            w.close()
    finally:
        await agent.stop()
        await asyncio.wait_for(task, 10)
    assert not where.exists()


async def test_down_messages_reach_the_guest_as_its_protocol_has_them(host: Host) -> None:
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1", interval_ms=60_000, timeout_ms=30_000)
    host.sup.deliver(
        {
            "type": "peer-state",
            "to": ["vm1"],
            "group": "g",
            "peer": "vm2",
            "peer_name": None,
            "state": "unreachable",
            "host": None,
            "reason": None,
        }
    )
    host.sup.deliver(
        {
            "type": "status-response",
            "to": ["vm1"],
            "request_id": "q",
            "peers": [
                {
                    "id": "vm2",
                    "name": None,
                    "group": "g",
                    "state": "started",
                    "host": "h2",
                    "since": 12.5,
                }
            ],
        }
    )
    got = []
    while len(got) < 2:
        msg = await guest.recv()
        assert msg is not None
        if msg["type"] != "challenge-request":
            got.append(msg)
    assert got[0] == {
        "type": "peer-state",
        "group": "g",
        "peer": "vm2",
        "peer_name": "",
        "state": "unreachable",
        "host": None,
        "reason": None,
    }
    assert got[1]["peers"] == [
        {"id": "vm2", "name": "", "group": "g", "state": "started", "host": "h2"}
    ]
    assert host.count("delivered") == 2 and host.count("bad_downlink") == 0
    await guest.close()
