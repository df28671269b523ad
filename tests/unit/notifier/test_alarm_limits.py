"""How much one project may ask of the notifier: actions per alarm, alarms per
project, and lists a page at a time."""

from __future__ import annotations

from pathlib import Path

import httpx

from opendoctor.notifier.alarms import AlarmService
from opendoctor.notifier.index import AlarmIndex
from opendoctor.notifier.rules import MAX_ACTIONS
from opendoctor.store.alarms import AlarmStore

from .conftest import build_app
from .helpers import ADMIN, PROJECT_A, PROJECT_B, alarm_body


async def test_more_actions_than_an_alarm_may_have_is_400(client: httpx.AsyncClient) -> None:
    urls = [f"http://vnfm.example/{i}" for i in range(MAX_ACTIONS + 1)]
    resp = await client.post("/v2/alarms", json=alarm_body(ok_actions=urls), headers=PROJECT_A)
    assert resp.status_code == 400
    assert resp.json()["error"]["errors"][0]["field"] == "ok_actions"
    ok = await client.post(
        "/v2/alarms", json=alarm_body(ok_actions=urls[:MAX_ACTIONS]), headers=PROJECT_A
    )
    assert ok.status_code == 201


async def test_a_project_at_its_quota_cannot_add_another_alarm(
    store: AlarmStore, tmp_path: Path
) -> None:
    service = AlarmService(store, AlarmIndex(), max_per_project=3)
    await service.load()
    transport = httpx.ASGITransport(app=build_app(service, tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        made = [
            (await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)).json()
            for _ in range(3)
        ]
        over = await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)
        assert over.status_code == 403
        assert over.json()["error"]["errors"][0]["field"] == "project_id"
        # Nothing of the refused one is kept; another project is not held back.
        listed = (await client.get("/v2/alarms", headers=PROJECT_A)).json()
        assert sorted(a["alarm_id"] for a in listed) == sorted(a["alarm_id"] for a in made)
        other = await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_B)
        assert other.status_code == 201
        # One deleted, one may come.
        await client.delete(f"/v2/alarms/{made[0]['alarm_id']}", headers=PROJECT_A)
        again = await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)
        assert again.status_code == 201


async def test_alarms_are_listed_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await client.post("/v2/alarms", json=alarm_body(), headers=PROJECT_A)).is_success
    everything = (await client.get("/v2/alarms", headers=ADMIN)).json()
    pages: list[list[str]] = []
    marker: str | None = None
    while True:
        params = {"limit": "2", **({"marker": marker} if marker else {})}
        page = (await client.get("/v2/alarms", params=params, headers=ADMIN)).json()
        if not page:
            break
        pages.append([a["alarm_id"] for a in page])
        marker = page[-1]["alarm_id"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [a["alarm_id"] for a in everything]
    unknown = await client.get(
        "/v2/alarms", params={"marker": "00000000-0000-0000-0000-000000000000"}, headers=ADMIN
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["errors"][0]["field"] == "marker"
