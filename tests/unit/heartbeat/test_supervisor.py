"""The host-side supervisor against hand-driven guests on real Unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from opendoctor.heartbeat.hostside import HeartbeatSettings, HeartbeatSupervisor
from opendoctor.wire import heartbeat as p
from tests.conftest import eventually

from .conftest import Host, RawGuest, answering, intervals_pass


async def test_registration_then_quiet_challenges(host: Host) -> None:
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    assert host.sup.state("vm1") == "waiting"
    assert host.count("challenges") == 0  # nobody is challenged before it registers
    ack = await guest.register("vm1")
    assert ack == {
        "type": "init-ack",
        "instance_id": "vm1",
        "heartbeat_interval_ms": 100,
        "response_timeout_ms": 80,
    }
    seqs = []
    for _ in range(3):
        challenge = await guest.challenge()
        seqs.append(challenge["seq"])
        await guest.answer(challenge)
    assert seqs == sorted(set(seqs))
    await eventually(lambda: host.count("responses") == 3, what="responses counted")
    assert host.sup.state("vm1") == "ok"
    assert host.reports == []
    await guest.close()


@pytest.mark.parametrize(
    ("proposed", "granted"),
    [
        ((10, 5), (50, 10)),
        ((0, 0), (200, 100)),
        ((5000, 5000), (1000, 1000)),
        ((300, 0), (300, 100)),
    ],
)
async def test_negotiation_clamps_proposals_into_the_hosts_range(
    make_host: Callable[..., Host], proposed: tuple[int, int], granted: tuple[int, int]
) -> None:
    host = make_host(interval=0.2, response_timeout=0.1, min_interval=0.05, max_interval=1.0)
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    ack = await guest.register("vm1", *proposed)
    assert (ack["heartbeat_interval_ms"], ack["response_timeout_ms"]) == granted
    await guest.close()


async def test_silent_guest_is_missed_then_up_when_it_answers_again(
    make_host: Callable[..., Host],
) -> None:
    host = make_host(clear_after=0)  # the first good answer clears
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1")
    await guest.answer(await guest.challenge())
    ignored = await guest.challenge()
    await eventually(lambda: host.of("vm1") == [("missed", "down")], what="missed report")
    assert host.sup.state("vm1") == "missed"
    event = host.reports[0]
    assert event["type"] == "compute.instance.heartbeat.missed"
    assert datetime.fromisoformat(event["time"]).utcoffset() is not None
    details = event["details"]
    assert details["hostname"] == "host-1"
    assert details["instance_name"] == "vm1-name"
    assert details["monitor"] == "opendoctor-guest-heartbeat"
    assert "no response" in details["reason"]

    await guest.answer(ignored)  # too late now: counted, not a recovery
    await eventually(lambda: host.count("late_response") == 1, what="late response counted")
    assert host.sup.state("vm1") == "missed"
    await guest.answer(await guest.challenge())
    await eventually(lambda: host.of("vm1") == [("missed", "down"), ("missed", "up")], what="up")
    assert host.sup.state("vm1") == "ok"
    ids = {e["details"]["monitor_event_id"] for e in host.reports}
    assert len(ids) == 2
    await guest.close()


async def test_unhealthy_answer_is_a_fault_until_a_healthy_one(
    make_host: Callable[..., Host],
) -> None:
    host = make_host(clear_after=0)
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1")
    await guest.answer(await guest.challenge(), healthy=False, reason="disk full")
    await eventually(lambda: host.of("vm1") == [("unhealthy", "down")], what="unhealthy report")
    assert host.reports[0]["details"]["reason"] == "disk full"
    assert host.sup.state("vm1") == "unhealthy"
    await guest.answer(await guest.challenge(), healthy=False, reason="still full")
    await guest.answer(await guest.challenge())
    await eventually(
        lambda: host.of("vm1") == [("unhealthy", "down"), ("unhealthy", "up")], what="up"
    )
    await guest.close()


async def test_a_guest_toggling_its_health_raises_one_fault(
    make_host: Callable[..., Host],
) -> None:
    host = make_host(clear_after=1.0)
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1")
    for i in range(11):  # bad, good, bad, ... bad
        await guest.answer(await guest.challenge(), healthy=i % 2 == 1, reason="flapping")
    last_bad = time.monotonic()
    assert host.of("vm1") == [("unhealthy", "down")]
    # Good answers from now on: the fault clears once they have lasted clear_after.
    for _ in range(100):
        if len(host.of("vm1")) > 1:
            break
        await guest.answer(await guest.challenge())
    assert host.of("vm1") == [("unhealthy", "down"), ("unhealthy", "up")]
    assert time.monotonic() - last_bad >= 1.0
    await guest.close()


async def test_a_guest_may_not_ask_for_challenges_faster_than_the_default(host: Host) -> None:
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    ack = await guest.register("vm1", interval_ms=20, timeout_ms=10)
    assert ack["heartbeat_interval_ms"] == round(HeartbeatSettings().interval * 1000) == 100
    await guest.close()


async def test_bad_input_is_counted_and_supervision_goes_on(host: Host) -> None:
    await host.add("vm1", "vm2")
    async with answering(host, "vm1") as guest, answering(host, "vm2"):
        stranger = await RawGuest.connect(host.sock("vm1"))
        await guest.send_raw(b"this is not json\n\n")
        await guest.send({"x": 1}, group="no-such-service")
        await guest.send_raw(b'{"version":9,"revision":1,"msg_group":"heartbeat","body":{}}\n')
        await guest.send_raw(
            b'{"version":1,"revision":1,"msg_group":"heartbeat","body":{"type":"reboot"}}\n'
        )
        await guest.send(
            {"type": "challenge-response", "seq": 99999, "challenge": "ab", "healthy": True}
        )
        await guest.send({"type": "challenge-request", "seq": 1, "challenge": "ab"})
        await stranger.send(
            {"type": "challenge-response", "seq": 1, "challenge": "ab", "healthy": False}
        )
        await guest.send(_init("other-vm"))
        expected = {
            "malformed": 1,
            "unknown_group": 1,
            "version": 1,
            "bad_pdu": 1,
            "unsolicited_response": 2,
            "unexpected_pdu": 1,
            "wrong_instance": 1,
        }
        await eventually(
            lambda: all(host.count(k) == n for k, n in expected.items()),
            what=f"counters {expected}",
        )
        await intervals_pass(host, 10)
        assert host.sup.state("vm1") == host.sup.state("vm2") == "ok"
        assert host.reports == []
        await stranger.close()


def _init(vm: str) -> dict[str, Any]:
    return {
        "type": "init",
        "instance_id": vm,
        "agent": "x/1",
        "heartbeat_interval_ms": 100,
        "response_timeout_ms": 80,
        "health_check": False,
    }


async def test_floods_and_runaway_lines_cost_only_their_connection(host: Host) -> None:
    await host.add("vm1", "vm2")
    async with answering(host, "vm1"):
        flooder = await RawGuest.connect(host.sock("vm1"))
        began = time.monotonic()
        with contextlib.suppress(OSError):
            await flooder.send_raw(b"{}\n" * 5000)
        assert await flooder.closed_by_host()
        # The burst, and what the bucket refilled while the flood was read, then no more.
        settings = host.sup.settings
        allowed = settings.msg_burst + settings.max_msgs_per_sec * (time.monotonic() - began)
        runaway = await RawGuest.connect(host.sock("vm1"))
        with contextlib.suppress(OSError):
            await runaway.send_raw(b"x" * (3 * p.MAX_LINE))
        assert await runaway.closed_by_host()
        assert host.count("flood") == 1
        assert host.count("too_long") == 1
        assert host.count("version") <= allowed  # b"{}" lacks a version

        # The registered guest itself flooding is cut off too, and then it is missing.
        guest = await RawGuest.connect(host.sock("vm2"))
        await guest.register("vm2")
        with contextlib.suppress(OSError):
            await guest.send_raw(b"\n" * 5000)
        await eventually(lambda: host.of("vm2") == [("missed", "down")], what="flooder missed")
        assert host.count("flood") == 2
        await intervals_pass(host, 5)
        assert host.of("vm1") == []
        await flooder.close()
        await runaway.close()
        await guest.close()


async def test_exit_ends_supervision_without_a_fault(host: Host) -> None:
    await host.add("vm1", "clock")
    async with answering(host, "clock"):
        guest = await RawGuest.connect(host.sock("vm1"))
        await guest.register("vm1")
        await guest.challenge()  # and never answered: exit makes that moot
        await guest.send({"type": "exit", "reason": "shutdown"})
        await eventually(lambda: host.sup.state("vm1") == "waiting", what="waiting")
        await guest.close()
        await intervals_pass(host, 5)  # past any deadline and the reconnect grace
        assert host.reports == []
        guest = await RawGuest.connect(host.sock("vm1"))
        await guest.register("vm1")
        assert host.sup.state("vm1") == "ok"
        assert host.count("reinit") == 0  # after an exit it is a fresh registration
        await guest.close()


async def test_reconnect_within_grace_is_no_fault_but_staying_away_is(
    make_host: Callable[..., Host],
) -> None:
    # A grace a loaded machine cannot overrun between a drop and the test's reconnection.
    host = make_host(reconnect_grace=1.0)
    await host.add("vm1", "clock")
    async with answering(host, "clock"):
        async with answering(host, "vm1"):
            pass  # dropped without exit ...
        async with answering(host, "vm1"):  # ... and back at once
            await intervals_pass(host, 6)
        assert host.count("reinit") == 1
        assert host.reports == []
        await eventually(lambda: host.of("vm1") == [("missed", "down")], what="missed")
        assert "channel closed" in host.reports[0]["details"]["reason"]
        async with answering(host, "vm1"):
            await eventually(lambda: host.sup.state("vm1") == "ok", what="back")
        assert host.of("vm1") == [("missed", "down"), ("missed", "up")]


async def test_a_new_agent_takes_over_from_a_hung_one(host: Host) -> None:
    await host.add("vm1")
    hung = await RawGuest.connect(host.sock("vm1"))
    await hung.register("vm1", interval_ms=1000, timeout_ms=900)
    await hung.challenge()  # a hung agent will not answer this
    fresh = await RawGuest.connect(host.sock("vm1"))
    await fresh.register("vm1", interval_ms=1000, timeout_ms=900)
    while (msg := await hung.recv()) is not None:  # the old connection is closed
        assert msg["type"] == "challenge-request"
    await fresh.answer(await fresh.challenge())
    await eventually(lambda: host.count("responses") == 1, what="response")
    assert host.reports == []
    await hung.close()
    await fresh.close()


async def test_connections_per_vm_are_limited(host: Host) -> None:
    await host.add("vm1")
    limit = host.sup.settings.max_connections
    guests = [await RawGuest.connect(host.sock("vm1")) for _ in range(limit + 1)]
    await eventually(lambda: host.count("too_many_connections") == 1, what="refusal")
    assert await guests[-1].closed_by_host()
    for g in guests:
        await g.close()


async def test_stale_socket_is_replaced_and_removal_is_silent(host: Host, tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(host.sock("vm1"))
    stale.close()  # leaves the file, as a crashed host process would
    (tmp_path / "vm2.sock").write_text("not a socket")
    with pytest.raises(FileExistsError):
        await host.add("vm2")
    await host.add("vm1")
    guest = await RawGuest.connect(host.sock("vm1"))
    await guest.register("vm1")
    await host.sup.remove_vm("vm1")
    msgs = []
    while (msg := await guest.recv()) is not None:
        msgs.append(msg["type"])
    assert msgs[-1] == "exit"
    assert not await asyncio.to_thread(os.path.exists, host.sock("vm1"))
    assert host.reports == []
    await guest.close()


async def test_a_failing_report_callback_does_not_stop_supervision(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def report(event: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("consumer queue is broken")

    sup = HeartbeatSupervisor("h", report, HeartbeatSettings(clear_after=0))
    try:
        path = str(tmp_path / "vm1.sock")
        await sup.add_vm("vm1", "vm1", path)
        guest = await RawGuest.connect(path)
        await guest.register("vm1")
        await guest.answer(await guest.challenge(), healthy=False, reason="bad")
        await eventually(lambda: sup.state("vm1") == "unhealthy", what="unhealthy")
        await guest.answer(await guest.challenge())
        await eventually(lambda: sup.state("vm1") == "ok", what="recovered")
        assert len(calls) == 2
        await guest.close()
    finally:
        await sup.close()
