"""Two processes' alarm services on one database: each takes up what the other changed."""

from __future__ import annotations

from opendoctor.core.identity import Identity
from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.rules import AlarmBody
from opendoctor.store.alarms import AlarmStore
from tests.unit.notifier.helpers import INSTANCE, alarm_body, make_event

OWNER = Identity("project-a", "user-a")


async def test_changes_made_by_another_process_are_taken_up(store: AlarmStore) -> None:
    here = AlarmService(store, AlarmIndex())
    there = AlarmService(AlarmStore(store.db), AlarmIndex())
    await here.load()
    await there.load()

    created = await there.create(AlarmBody.model_validate(alarm_body()), OWNER)
    assert here.index.get(created.alarm_id) is None
    assert await here.sync() == 1
    # The new alarm now matches events here, as it would where it was created.
    event = make_event(instance_id=(1, INSTANCE), state=(1, "error"))
    assert [a.alarm_id for a in here.index.match(event)] == [created.alarm_id]
    assert await here.sync() == 0  # each change is taken up once

    # Fired over there (state alarm): not fired again here without repeat_actions.
    await there.set_state(created.alarm_id, "alarm", OWNER)
    await here.sync()
    alarm = here.index.get(created.alarm_id)
    assert alarm is not None and alarm.state == "alarm"
    # Re-armed over there: taken up in place (a state change needs no reload).
    await there.set_state(created.alarm_id, "ok", OWNER)
    assert await here.sync() == 0
    assert here.index.get(created.alarm_id) is alarm and alarm.state == "ok"

    await there.delete(created.alarm_id, OWNER)
    await here.sync()
    assert here.index.get(created.alarm_id) is None
    assert here.index.match(event) == []
