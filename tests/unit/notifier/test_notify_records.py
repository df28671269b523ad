"""What a fault's notification path sends and stores: the Aodh body byte for byte, the
entry ids a replay rebuilds, and the outbox rows of many concurrent faults written
together (group commit) without losing or doubling one. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from opendoctor.core.alarms import Alarm
from opendoctor.core.egress import EgressPolicy
from opendoctor.core.identity import Identity
from opendoctor.core.model import TRAIT_STRING, NotificationEvent
from opendoctor.core.notifications import DELIVERED, FAILED, OutboxEntry
from opendoctor.core.ports import DeliveryError
from opendoctor.core.settings import NotifierSettings
from opendoctor.infra.group_commit import GroupCommit
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.delivery import Dispatcher
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.notifier import Notifier, _entry_id, callback_body
from opendoctor.notifier.rules import AlarmBody
from opendoctor.store.alarms import AlarmStore
from opendoctor.store.db import Database
from opendoctor.store.outbox import OutboxStore
from tests.unit.notifier.helpers import make_event

OWNER = Identity("project-a", "vnfm")


class Recorder:
    """A sender that keeps what it was given; URLs ending in /refuse fail for good."""

    def __init__(self) -> None:
        self.sent: list[OutboxEntry] = []

    async def send(self, entry: OutboxEntry) -> None:
        await asyncio.sleep(0)  # a real send yields to the loop
        if entry.url.endswith("/refuse"):
            raise DeliveryError("refused", retry=False)
        self.sent.append(entry)


async def _notifier(db: Database) -> tuple[Notifier, AlarmService, Recorder, OutboxStore]:
    index = AlarmIndex()
    alarms = AlarmService(AlarmStore(db), index, EgressPolicy.of(["127.0.0.0/8"]))
    outbox = OutboxStore(db)
    recorder = Recorder()
    dispatcher = Dispatcher(outbox, {"http": recorder}, NotifierSettings())
    return Notifier(index, alarms, outbox, dispatcher), alarms, recorder, outbox


async def _alarm(alarms: AlarmService, instance: str, url: str, **extra: Any) -> Alarm:
    body = {
        "name": f"vm-failure-{instance}",
        "type": "event",
        "severity": "critical",
        "alarm_actions": [url],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [{"field": "traits.instance_id", "op": "eq", "value": instance}],
        },
        **extra,
    }
    return await alarms.create(AlarmBody.model_validate(body), OWNER)


def _event(instance: str, fault: str = "fault-1") -> NotificationEvent:
    event = make_event(instance_id=(TRAIT_STRING, instance), state=(TRAIT_STRING, "error"))
    event.fault_id = fault
    return event


async def test_bodies_are_the_aodh_callback_byte_for_byte(db: Database) -> None:
    notifier, alarms, recorder, _ = await _notifier(db)
    url = "http://127.0.0.1:9/failure"
    # Two alarms on one event (they share its encoded part), one on another; one batch
    # with a root cause and one without.
    a1 = await _alarm(alarms, "vm-1", url)
    a2 = await _alarm(alarms, "vm-1", url, severity="low", name="second")
    a3 = await _alarm(alarms, "vm-2", url)
    e1, e2, e3 = _event("vm-1"), _event("vm-2"), _event("vm-3")
    cause = {"type": "host", "id": "compute1", "details": {"status": "down", "n": [1, 2.5]}}
    entries = await notifier.notify_many([([e1, e3], cause), ([e2], None)])
    assert len(entries) == 3 and len(recorder.sent) == 3
    expected = {
        a1.alarm_id: (a1, e1, cause),
        a2.alarm_id: (a2, e1, cause),
        a3.alarm_id: (a3, e2, None),
    }
    for entry in recorder.sent:
        alarm, event, root_cause = expected[entry.alarm_id]
        reason = (
            f"Event <id={event.message_id},event_type={event.event_type}> "
            f"hits the query of alarm {alarm.name}."
        )
        body = callback_body(alarm, "insufficient data", event, reason, root_cause)
        assert orjson.loads(entry.payload) == body
        assert entry.payload == orjson.dumps(body)
        assert entry.body == body  # what the outbox keeps, for retries
    await notifier.close()


def test_entry_ids_are_uuid5_of_message_alarm_and_url() -> None:
    # Ids must not change across versions: a replay after an upgrade finds its rows.
    for message, alarm, url in [
        ("m-1", "a-1", "http://c/failure"),
        (str(uuid.uuid4()), str(uuid.uuid4()), "https://ünïcode.example/x?y=1"),
    ]:
        want = uuid.uuid5(uuid.NAMESPACE_URL, f"{message}/{alarm}/{url}")
        assert _entry_id(message, alarm, url) == str(want)


async def test_concurrent_faults_are_stored_together_each_entry_once(db: Database) -> None:
    notifier, alarms, _, outbox = await _notifier(db)
    faults, per_fault = 12, 8
    for f in range(faults):
        for v in range(per_fault):
            # Every third fault's first owner refuses: its outcome must be stored too.
            refuse = f % 3 == 0 and v == 0
            url = "http://127.0.0.1:9/" + ("refuse" if refuse else "failure")
            # Fault 1 is notified twice at once below: its alarms fire each time.
            await _alarm(alarms, f"vm-{f}-{v}", url, repeat_actions=f == 1)
    batches = [
        [([_event(f"vm-{f}-{v}", f"fault-{f}") for v in range(per_fault)], {"fault": f})]
        for f in range(faults)
    ]
    before = notifier._outbox_rows.batches
    # The same fault twice at once as well (a redelivery racing the first delivery).
    results = await asyncio.gather(*(notifier.notify_many(b) for b in [*batches, batches[1]]))
    assert all(len(r) == per_fault for r in results)
    written = notifier._outbox_rows.batches - before
    assert written < faults, "concurrent faults were written one transaction each"
    stored = await outbox.list(limit=10_000)
    assert len(stored) == faults * per_fault
    assert len({e.id for e in stored}) == len(stored)
    outcome = {e.id: e.status for r in results for e in r}
    for entry in stored:
        assert entry.status == outcome[entry.id]
        assert entry.status == (FAILED if entry.url.endswith("/refuse") else DELIVERED)
        assert entry.attempts == 1
    history = await AlarmStore(outbox.db).states([e.alarm_id for e in stored])
    assert {state for state, _, _ in history.values()} == {"alarm"}
    await notifier.close()


class HeldWrites:
    """A write that waits at a gate, so that callers queue behind the one under way."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.written: list[list[Any]] = []

    async def __call__(self, parts: list[Any]) -> None:
        self.entered.set()
        await self.gate.wait()
        if "bad" in parts:
            raise ValueError("bad row")
        self.written.append(parts)

    async def queue(self, commit: GroupCommit[Any], parts: list[Any]) -> list[asyncio.Future[None]]:
        """Start one write, queue `parts` behind it, then open the gate."""
        first = asyncio.ensure_future(commit.write(parts[0]))
        await self.entered.wait()
        rest = [asyncio.ensure_future(commit.write(p)) for p in parts[1:]]
        while len(commit._queue) < len(rest):
            await asyncio.sleep(0)
        self.gate.set()
        return [first, *rest]


async def test_a_failing_part_does_not_fail_the_others_written_with_it() -> None:
    held = HeldWrites()
    commit: GroupCommit[str] = GroupCommit(held, size=lambda _: 1)
    calls = await held.queue(commit, ["first", "a", "bad", "b"])
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], ValueError)
    # The first alone, the three queued behind it together (failed: one is bad), then
    # each of those alone.
    assert held.written == [["first"], ["a"], ["b"]]
    assert commit.batches == 5
    await commit.close()


@pytest.mark.parametrize("most", [1, 3])
async def test_a_batch_holds_at_most_the_given_rows(most: int) -> None:
    held = HeldWrites()
    commit: GroupCommit[int] = GroupCommit(held, size=lambda p: p, most=most)
    await asyncio.gather(*await held.queue(commit, [1] * 7))
    sizes = [sum(parts) for parts in held.written]
    assert sum(sizes) == 7 and max(sizes) <= most
    assert len(sizes) == 1 + -(-6 // most)  # the first alone, then full batches
    await commit.close()
