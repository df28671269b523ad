"""Events in, notifications out: match alarms through the index, move them, deliver.

One call handles a whole batch (all servers of a failed host): matching is in memory,
state changes and outbox rows are written in one bulk statement each, and every
delivery starts at once. Calls at the same time (a storm's faults) write together:
one transaction for the outbox rows of many faults, one for their alarms' transitions
(`infra.group_commit`). Each call still returns only once its own rows are stored.

The call waits for the first attempts, but no longer than `first_attempt_wait`: a
consumer that is slow to answer (or a tenant's that never does) must not hold up the
fault's handling, nor the next event, for everyone else. Entries whose first attempt
is still running then are stored as claimed (no other process retries them meanwhile)
and their outcome is written when it comes; `landed` waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from opendoctor.bus.base import redelivered
from opendoctor.core.alarms import Alarm, Transition
from opendoctor.core.model import NotificationEvent
from opendoctor.core.notifications import PENDING, Batch, OutboxEntry
from opendoctor.infra import metrics
from opendoctor.infra.group_commit import GroupCommit
from opendoctor.infra.tasks import Background, keep_trying
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.delivery import Dispatcher
from opendoctor.notifier.index import AlarmIndex
from opendoctor.store.outbox import OutboxStore

log = logging.getLogger(__name__)

ALARM = "alarm"


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def _entry_id(message_id: str, alarm_id: str, url: str) -> str:
    # Deterministic, so replaying an event after a crash recreates the same entries:
    # uuid5(NAMESPACE_URL, "message/alarm/url"), spelt out (a thousand per fault; the
    # uuid module's objects cost more than the hash). Tests hold it to `uuid.uuid5`.
    digest = bytearray(
        hashlib.sha1(_URL_NAMESPACE + f"{message_id}/{alarm_id}/{url}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def reason_data(event_wire: dict[str, Any], root_cause: Any = None) -> dict[str, Any]:
    """The `reason_data` of an event's callbacks: the same for every alarm it fires."""
    data: dict[str, Any] = {"type": "event", "event": event_wire}
    if root_cause is not None:
        data["root_cause"] = root_cause
    return data


def callback_body(
    alarm: Alarm, previous: str, event: NotificationEvent, reason: str, root_cause: Any = None
) -> dict[str, Any]:
    """The Aodh alarm callback body (DESIGN.md §5)."""
    return {
        **_head(alarm, previous, reason),
        "reason_data": reason_data(event.to_wire(), root_cause),
    }


def _head(alarm: Alarm, previous: str, reason: str) -> dict[str, Any]:
    """The body's fields before `reason_data`, in the order Aodh sends them."""
    return {
        "alarm_name": alarm.name,
        "alarm_id": alarm.alarm_id,
        "severity": alarm.severity,
        "previous": previous,
        "current": ALARM,
        "reason": reason,
    }


def _encoded_reason(event_wire: dict[str, Any], encoded_cause: bytes | None) -> bytes:
    """`orjson.dumps(reason_data(event_wire, root_cause))`, the root cause (the same for
    a whole batch) encoded beforehand."""
    encoded = orjson.dumps({"type": "event", "event": event_wire})
    if encoded_cause is None:
        return encoded
    return encoded[:-1] + b',"root_cause":' + encoded_cause + b"}"


class Notifier:
    def __init__(
        self,
        index: AlarmIndex,
        alarms: AlarmService,
        outbox: OutboxStore,
        dispatcher: Dispatcher,
        shared: bool = False,
        first_attempt_wait: float = 0.5,
    ) -> None:
        self.index = index
        self.alarms = alarms
        self.outbox = outbox
        self.dispatcher = dispatcher
        # Other processes change alarms too (an owner creates or re-arms one through
        # another API replica, or fires one): before matching, the definitions committed
        # so far are taken up, and every matched alarm's state is read from the store,
        # rather than miss a fault or tell an owner twice in the sync interval.
        self.shared = shared
        self.first_attempt_wait = first_attempt_wait
        # Entry id -> its first attempt, while it outlasts the wait.
        self._first: dict[str, asyncio.Future[None]] = {}
        self._background = Background()
        # Two group commits, not one: a call's outbox rows must not wait behind other
        # calls' transitions (a lock on the alarm history, a slow write), or a crash
        # there would leave callbacks sent and not in the outbox, which a redelivery
        # sends again.
        self._outbox_rows: GroupCommit[list[OutboxEntry]] = GroupCommit(
            lambda parts: self.outbox.add([e for part in parts for e in part]), len
        )
        self._transitions: GroupCommit[list[Transition]] = GroupCommit(
            lambda parts: self.alarms.record_transitions([t for part in parts for t in part]),
            len,
        )

    async def notify(
        self, events: list[NotificationEvent], root_cause: Any = None
    ) -> list[OutboxEntry]:
        """Fire every alarm the events match; returns the entries after their first attempt."""
        return await self.notify_many([(events, root_cause)])

    async def notify_many(self, batches: Sequence[Batch]) -> list[OutboxEntry]:
        """`notify` for several batches (one fault's owners, grouped by root cause) at
        once: one take-up of alarm changes, every first attempt together, one write."""
        now = time.time()
        if self.shared:
            # An owner's alarm created (through another process) before the fault must
            # fire: take up the definition changes committed until now first. One query
            # per batch, which reads no state transitions (mostly this process's own, by
            # the thousand in a storm): the matched alarms' states are read below.
            await self.alarms.sync_since(now, states=False)
        transitions: list[Transition] = []
        entries: list[OutboxEntry] = []
        matches = [
            (event, root_cause, self.index.match(event))
            for events, root_cause in batches
            for event in events
        ]
        if self.shared:
            # Every matched alarm's state as stored, by id (one query): one another
            # process fired meanwhile is not fired twice, one it re-armed fires again.
            hit = [a for _, _, alarms in matches for a in alarms]
            if hit:
                await self.alarms.refresh_states(hit)
        # One event's wire form and `reason_data` serve each alarm it fires (and its
        # transition): built and encoded once per event, not per alarm.
        causes: dict[int, bytes] = {}
        for event, root_cause, matched_alarms in matches:
            # The objects in the index now: a PUT may have replaced a matched one while
            # the states were refreshed, and a state set on it would be lost. One
            # already in alarm fires again only if it repeats its actions: a server's
            # own fault after its host's tells nobody, and costs no wire form.
            alarms = [
                alarm
                for matched in matched_alarms
                if (alarm := self.index.get(matched.alarm_id) or matched).state != ALARM
                or alarm.repeat_actions
            ]
            if not alarms:
                continue
            wire = event.to_wire()
            data = reason_data(wire, root_cause)
            cause = None
            if root_cause is not None:
                cause = causes.get(id(root_cause))
                if cause is None:
                    cause = causes[id(root_cause)] = orjson.dumps(root_cause)
            encoded_reason = _encoded_reason(wire, cause)
            transition_data = {"type": "event", "event": wire}
            for alarm in alarms:
                previous = alarm.state
                reason = (
                    f"Event <id={event.message_id},event_type={event.event_type}> "
                    f"hits the query of alarm {alarm.name}."
                )
                if previous != ALARM:
                    alarm.state = ALARM
                    alarm.state_timestamp = now
                    alarm.state_reason = reason
                    transitions.append(
                        Transition(
                            alarm_id=alarm.alarm_id,
                            previous=previous,
                            current=ALARM,
                            reason=reason,
                            reason_data=transition_data,
                            timestamp=now,
                            project_id=alarm.project_id,
                            user_id=alarm.user_id,
                            severity=alarm.severity,
                        )
                    )
                head = _head(alarm, previous, reason)
                body = {**head, "reason_data": data}
                # Byte for byte `orjson.dumps(body)`: `reason_data` comes last.
                payload = orjson.dumps(head)[:-1] + b',"reason_data":' + encoded_reason + b"}"
                for url in alarm.alarm_actions:
                    entries.append(
                        OutboxEntry(
                            id=_entry_id(event.message_id, alarm.alarm_id, url),
                            alarm_id=alarm.alarm_id,
                            url=url,
                            body=body,
                            created=now,
                            fault_id=event.fault_id,
                            next_attempt=now,
                            payload=payload,
                        )
                    )
        if not entries and not transitions:
            return []
        if entries and redelivered():
            # Another process (or an earlier try here) may have sent these and stored
            # them, then died before the alarms' states were written or the message
            # acked: whatever the outbox holds was sent (or is retried from there).
            stored = await self.outbox.existing([e.id for e in entries])
            if stored:
                log.info("redelivered notifications already sent", extra={"entries": len(stored)})
                entries = [e for e in entries if e.id not in stored]
        # Send first, write after: the owners never wait on the disk, and the rows are
        # written once, with the outcome of the first attempt. If opendoctor dies before
        # the write, the event is still unprocessed; its replay rebuilds the same entry
        # ids and sends again (at least once, with the same request id to deduplicate).
        attempts = self.dispatcher.first_attempts(entries)
        late: list[tuple[OutboxEntry, asyncio.Future[None]]] = []
        if attempts:
            _, running = await asyncio.wait(attempts, timeout=self.first_attempt_wait)
            late = [(e, t) for e, t in zip(entries, attempts, strict=True) if t in running]
        written = asyncio.Event()
        if late:
            metrics.NOTIFICATIONS_LATE.inc(len(late))
            claim = time.time() + self.dispatcher.claim_seconds
            for entry, task in late:
                entry.next_attempt = claim  # set again by the attempt if it must retry
                self._first[entry.id] = task
            self._background.spawn(self._record_late(late, written))
        try:
            await self._persist(entries, transitions)
            written.set()
        except Exception as exc:
            # The owners were told: what is left is the record. A busy or absent database
            # must not undo the fault's handling; keep trying in the background.
            log.warning(
                "notifications not stored yet; trying again",
                extra={"entries": len(entries), "error": str(exc)},
            )
            self._background.spawn(self._persist_later(entries, transitions, written))
        return entries

    async def landed(self, entries: Sequence[OutboxEntry]) -> None:
        """Wait until every entry's first attempt has ended (most have, when
        `notify_many` returns)."""
        running = [t for e in entries if (t := self._first.get(e.id)) is not None]
        if running:
            await asyncio.gather(*(asyncio.shield(t) for t in running), return_exceptions=True)

    async def _record_late(
        self, late: list[tuple[OutboxEntry, asyncio.Future[None]]], written: asyncio.Event
    ) -> None:
        try:
            await asyncio.gather(*(t for _, t in late), return_exceptions=True)
            await written.wait()  # written as claimed first, then with the outcome
            entries = [e for e, _ in late]
            try:
                await self.outbox.record_attempts(entries)
            except Exception:
                # Claimed meanwhile: if this never lands, the entries are retried later.
                await keep_trying(lambda: self.outbox.record_attempts(entries), 0.2, 10.0)
            if any(e.status == PENDING for e in entries):
                self.dispatcher.wake()
        finally:
            for entry, _ in late:
                self._first.pop(entry.id, None)

    async def _persist(self, entries: list[OutboxEntry], transitions: list[Transition]) -> None:
        # The outbox first: an alarm recorded as fired always has its entries stored, so
        # one whose first attempt failed is retried even if this process dies here.
        if entries:
            await self._outbox_rows.write(entries)
        if transitions:
            await self._transitions.write(transitions)
        if any(e.status == PENDING for e in entries):
            self.dispatcher.wake()

    async def _persist_later(
        self, entries: list[OutboxEntry], transitions: list[Transition], written: asyncio.Event
    ) -> None:
        # Entries already stored are left alone (same ids); transitions are written once
        # the outbox holds every entry.
        await keep_trying(lambda: self._persist(entries, transitions), first=0.2, most=10.0)
        written.set()
        log.info("notifications stored after all", extra={"entries": len(entries)})

    async def close(self) -> None:
        await self._background.close()
        await self._outbox_rows.close()
        await self._transitions.close()
