"""Text PostgreSQL cannot store (the NUL character, which JSON and SQLite allow) is a
clear 400 on every engine, never a 500, and an event carrying it is never handled."""

from __future__ import annotations

from opendoctor.api.errors import NUL_TEXT
from tests.integration.pipeline.conftest import ADMIN, Running, alarm_for, as_project, host_down

SERVER = "00000000-0000-0000-0000-000000000001"


async def test_an_event_with_a_nul_is_refused_before_it_is_handled(running: Running) -> None:
    in_status = host_down("compute1", status="do\x00wn")
    in_extra = host_down("compute2")
    in_extra["details"]["note"] = {"lines": ["ok", "not\x00ok"]}
    resp = await running.client.put("/events", json=[in_status, in_extra])
    assert resp.status_code == 400, resp.text
    errors = {e["field"]: e["problem"] for e in resp.json()["error"]["errors"]}
    assert errors == {"[0].details.status": NUL_TEXT, "[1].details.note.lines[1]": NUL_TEXT}
    await running.service.bus.drain()
    assert running.service.inspector.active == {}
    assert (await running.client.get("/v1/events", headers=ADMIN)).json() == []


async def test_other_text_with_a_nul_is_never_a_500(running: Running, db_url: str) -> None:
    body = alarm_for(SERVER, "log://", name="vm\x00failure")
    resp = await running.client.post("/v2/alarms", json=body, headers=as_project("project-a"))
    if db_url.startswith("postgresql"):
        # Refused by the database, before the alarm is in force anywhere.
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["message"] == f"body: {NUL_TEXT}"
        assert (
            await running.client.get("/v2/alarms", headers=as_project("project-a"))
        ).json() == []
    else:
        assert resp.status_code == 201, resp.text
