"""The sample consumer listening on AMQP: recorded like HTTP callbacks, switch-over too."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from aiohttp import web

from opendoctor.infra.procs import ChildProcess
from opendoctor.lab.client import LabClient
from opendoctor.notifier.amqp_sender import AmqpSender
from opendoctor.tools import consumer
from opendoctor.tools.consumer import RECEIVED, AmqpListener, make_app
from opendoctor.tools.switchover import Switcher
from tests.conftest import eventually
from tests.integration.amqp.conftest import Names
from tests.integration.amqp.test_sender import BODY, action, entry
from tests.integration.pipeline.conftest import Consumer
from tests.tcpproxy import free_port


def listen(amqp_url: str, exchange: str, key: str = "alarm.%23") -> str:
    return f"{amqp_url.rstrip('/')}/?exchange={exchange}&routing_key={key}"


async def test_the_consumer_command_records_callbacks_from_amqp_and_http(
    amqp_url: str, names: Names, tmp_path: Path
) -> None:
    exchange = names.exchange()
    args = ["-m", "opendoctor", "consumer", "--port", "0", "--quiet"]
    args += ["--amqp", listen(amqp_url, exchange)]
    ready = tmp_path / "consumer.ready"
    child = ChildProcess(
        "consumer", [sys.executable, *args, "--ready-file", str(ready)], ready, tmp_path / "log"
    )
    sender = AmqpSender(timeout=2.0)
    async with child, httpx.AsyncClient(base_url=child.ready) as http:
        try:
            await sender.send(entry(action(amqp_url, exchange), 1))
            [by_amqp] = await eventually(
                lambda: _received(http), what="the callback published to AMQP"
            )
            resp = await http.post(
                "/failure",
                content=orjson.dumps(BODY),
                headers={"x-openstack-request-id": "req-http-1"},
            )
            assert resp.status_code == 200
            # A redelivery (same request id) is not recorded twice; the next one is.
            await sender.send(entry(action(amqp_url, exchange), 1))
            await sender.send(entry(action(amqp_url, exchange), 2))
            received = await eventually(lambda: _received(http, 3), what="the second AMQP callback")
        finally:
            await sender.close()
    by_http = received[1]
    assert by_amqp["request_id"] == "req-00000000-0000-4000-8000-000000000001"
    assert by_amqp["path"] == f"amqp:{exchange}/alarm.project-a"
    assert by_http["path"] == "/failure"
    same = ("request_id", "path", "arrived")
    assert {k: v for k, v in by_amqp.items() if k not in same} == {
        k: v for k, v in by_http.items() if k not in same
    }
    assert by_amqp["instance_id"] == "vm-1" and by_amqp["current"] == "alarm"
    assert [r["request_id"] for r in received] == [
        "req-00000000-0000-4000-8000-000000000001",
        "req-http-1",
        "req-00000000-0000-4000-8000-000000000002",
    ]


async def _received(http: httpx.AsyncClient, n: int = 1) -> list[dict[str, Any]] | None:
    got: list[dict[str, Any]] = (await http.get("/received")).json()
    return got if len(got) >= n else None


class FakeLab:
    """What the switch-over asks of the lab, recorded; the standby's application is a
    real HTTP server (`standby_url`)."""

    def __init__(self, standby_url: str) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.standby_url = standby_url

    async def server_detail(self, server_id: str) -> dict[str, Any]:
        return {"id": server_id, "status": "ACTIVE", "healthy": True, "endpoint": self.standby_url}

    async def set_role(self, server_id: str, role: str) -> None:
        self.calls.append(("role", server_id, role))

    async def lb_members(self) -> list[dict[str, Any]]:
        return [
            {"id": "m1", "server_id": "vm-1", "admin_state_up": True},
            {"id": "m2", "server_id": "vm-2", "admin_state_up": False},
        ]

    async def set_member(self, member_id: str, up: bool) -> None:
        self.calls.append(("member", member_id, up))

    async def close(self) -> None:
        pass


async def test_an_amqp_notification_switches_a_pair_over(amqp_url: str, names: Names) -> None:
    exchange = names.exchange()
    standby = Consumer(f"http://127.0.0.1:{(port := free_port())}", web.Application())
    await standby.start(port)  # answers 404 to everything: alive, as a standby is
    lab = FakeLab(standby.url + "/")
    switcher = Switcher(cast(LabClient, lab), {"vm-1": "vm-2"})
    app = make_app(quiet=True, switcher=switcher)
    listener = AmqpListener(app, listen(amqp_url, exchange, "alarm.project-a"))
    sender = AmqpSender(timeout=2.0)
    try:
        await listener.start()
        await sender.send(entry(action(amqp_url, exchange)))
        await eventually(lambda: switcher.history and switcher.history[0].done, what="switch")
    finally:
        await sender.close()
        await listener.close()
        await switcher.close()
        await standby.stop()
    [record] = app[RECEIVED]
    assert record["switchover"] is True
    assert ("role", "vm-2", "active") in lab.calls
    assert {c for c in lab.calls if c[0] == "member"} == {
        ("member", "m2", True),
        ("member", "m1", False),
    }


async def test_a_bad_amqp_url_stops_the_consumer_with_the_reason() -> None:
    with pytest.raises(SystemExit, match=r"cannot listen on AMQP: .*exchange name is missing"):
        await consumer.serve("127.0.0.1", 0, None, True, amqp="amqp://127.0.0.1/")
