"""Nova's notifications as changes, and which of them are news: an older state of a
server (a notification overtaken by a later one, or a poll read before a notification
came) must not put the graph back in time."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from opendoctor.controller.nova_notifications import Newest, Stamped, parse
from opendoctor.core.model import Host, Server, VimChange


def _envelope(state: str, host: str, timestamp: str) -> bytes:
    message = {
        "event_type": "instance.update",
        "timestamp": timestamp,
        "payload": {
            "nova_object.data": {
                "uuid": "0b6c5e0e-4d7c-4c32-9d43-0f7d3f1d5a10",
                "display_name": "vm1",
                "host": host,
                "tenant_id": "p1",
                "state": state,
            }
        },
    }
    # oslo.messaging's 2.0 envelope: the message itself as text.
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def test_a_notification_says_the_server_and_when_nova_sent_it() -> None:
    stamped = parse(_envelope("error", "compute2", "2026-12-04 12:00:01.250000"))
    assert stamped is not None
    server = stamped.change.server
    assert server is not None and (server.status, server.host) == ("ERROR", "compute2")
    assert stamped.at == datetime(2026, 12, 4, 12, 0, 1, 250000, tzinfo=UTC).timestamp()


def test_an_older_state_of_a_server_is_dropped_a_newer_one_taken() -> None:
    newest = Newest()
    mid_move = parse(_envelope("error", "compute2", "2026-12-04 12:00:01.250000"))
    done = parse(_envelope("active", "compute2", "2026-12-04 12:00:01.900000"))
    assert mid_move is not None and done is not None
    assert newest.admit(done)
    # The evacuation's middle, overtaken by its end: the graph keeps ACTIVE.
    assert not newest.admit(mid_move)
    later = parse(_envelope("error", "compute2", "2026-12-04 12:00:05.000000"))
    assert later is not None and newest.admit(later)


def test_a_poll_read_before_a_notification_came_does_not_undo_it() -> None:
    newest = Newest()
    note = parse(_envelope("active", "compute2", "2026-12-04 12:00:03.000000"))
    assert note is not None and newest.admit(note)
    polled_at = datetime(2026, 12, 4, 12, 0, 2, tzinfo=UTC).timestamp()
    assert note.change.server is not None
    stale = Server(
        id=note.change.server.id, name="vm1", host="compute2", project_id="p1", status="ERROR"
    )
    assert not newest.admit(Stamped(VimChange("server", "upsert", server=stale), polled_at))


def test_host_changes_are_never_held_back() -> None:
    newest = Newest()
    host = Host(name="compute1", address="127.0.0.1", heartbeat_port=4100)
    assert newest.admit(Stamped(VimChange("host", "upsert", host=host), 10.0))
    assert newest.admit(Stamped(VimChange("host", "upsert", host=host), 5.0))
