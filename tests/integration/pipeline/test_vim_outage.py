"""A VIM that does not answer must not keep owners from hearing about faults."""

from __future__ import annotations

from pathlib import Path

import httpx

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.core.identity import Identity
from opendoctor.notifier.rules import AlarmBody
from tests.conftest import MONITOR, eventually
from tests.integration.pipeline.conftest import (
    Consumer,
    alarm_for,
    host_down,
    lab_vim,
    settings_for,
)


async def test_a_service_started_during_a_vim_outage_still_notifies(
    tmp_path: Path, db_url: str, consumer: Consumer
) -> None:
    vim = lab_vim()
    first = Service(settings_for(tmp_path, database_url=db_url), vim=vim)
    await first.start()
    victims = [s for s in vim.servers.values() if s.host == "compute1"]
    for server in victims:
        await first.alarms.create(
            AlarmBody.model_validate(alarm_for(server.id, consumer.url + "/failure")),
            Identity(project_id=server.project_id, user_id="vnfm"),
        )
    await first.stop()

    # The VIM is down when opendoctor (re)starts: it starts from what it stored.
    vim.fail = {"list_hosts", "list_servers"}
    service = Service(settings_for(tmp_path, database_url=db_url), vim=vim)
    await service.start()
    transport = httpx.ASGITransport(app=create_app(service.facade, manage=False))
    async with httpx.AsyncClient(
        transport=transport, headers=MONITOR, base_url="http://od"
    ) as client:
        try:
            assert set(service.topology.hosts) == {"compute1", "compute2", "compute3"}
            resp = await client.put("/events", json=[host_down("compute1")])
            assert resp.status_code == 202
            await eventually(lambda: len(consumer.received) == len(victims), what="notices")
            assert {r["instance_id"] for r in consumer.received} == {s.id for s in victims}

            # The VIM answers again: the topology is reloaded from it.
            calls = len([c for c in vim.calls if c[0] == "list_servers"])
            vim.fail = set()
            await eventually(
                lambda: len([c for c in vim.calls if c[0] == "list_servers"]) > calls,
                what="a reload from the VIM",
            )
        finally:
            await service.stop()
