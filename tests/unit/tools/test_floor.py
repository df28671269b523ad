"""The fan-out floor: a bare client in its own process, against real consumers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from opendoctor.core.model import TRAIT_STRING
from opendoctor.infra.procs import free_port
from opendoctor.notifier.notifier import callback_body
from opendoctor.tools import floor
from opendoctor.tools.consumer import ARRIVALS, make_app
from tests.unit.notifier.helpers import make_alarm, make_event


@pytest.fixture
async def consumers() -> AsyncIterator[list[tuple[str, web.Application]]]:
    running = []
    for _ in range(2):
        app = make_app(quiet=True)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        running.append((f"http://127.0.0.1:{port}", app, runner))
    yield [(url, app) for url, app, _ in running]
    for _, _, runner in running:
        await runner.cleanup()


def _callbacks(urls: list[str], n: int) -> list[floor.Callback]:
    out = []
    for i in range(n):
        alarm = make_alarm(alarm_id=f"alarm-{i}")
        event = make_event(instance_id=(TRAIT_STRING, f"vm-{i}"))
        body = orjson.dumps(callback_body(alarm, "ok", event, "hit"))
        headers = {"content-type": "application/json", "x-openstack-request-id": f"req-{i}"}
        out.append(floor.Callback(urls[i % len(urls)] + "/failure", body, headers))
    return out


async def test_the_floor_sends_every_callback_and_times_the_last(
    consumers: list[tuple[str, web.Application]],
) -> None:
    urls = [url for url, _ in consumers]
    callbacks = _callbacks(urls, 40)
    result = await floor.fan_out(urls, callbacks, runs=2, connections=8)
    assert len(result.runs) == 2
    assert result.missed == 0
    for figure in (result.last_told_p50, result.last_told_p99, result.per_callback_p99):
        assert 0 < figure < 30 and math.isfinite(figure)
    assert result.summary()["callbacks"] == 40
    # Each run leaves the consumers as it found them: empty.
    assert all(not app[ARRIVALS] for _, app in consumers)


async def test_callbacks_rebuilt_from_what_a_consumer_received() -> None:
    body = {"alarm_id": "a", "reason_data": {"type": "event", "event": {"traits": []}}}
    arrivals: list[dict[str, Any]] = [
        {"path": "/failure", "body": body, "content_type": "application/json", "request_id": "r"},
        {"path": "amqp:x/y", "body": body, "content_type": "", "request_id": "s"},
        {"path": "/failure", "body": "not json", "content_type": "", "request_id": "t"},
    ]
    [callback] = floor.from_arrivals("http://127.0.0.1:1/", arrivals)
    assert callback.url == "http://127.0.0.1:1/failure"
    assert orjson.loads(callback.body) == body
    assert callback.headers["x-openstack-request-id"] == "r"


async def test_the_consumer_lists_what_came_after_the_records_a_poller_has(
    consumers: list[tuple[str, web.Application]],
) -> None:
    (url, _), _ = consumers
    async with aiohttp.ClientSession() as http:
        for callback in _callbacks([url], 3):
            async with http.post(callback.url, data=callback.body, headers=callback.headers):
                pass
        async with http.get(url + "/received") as resp:
            every = await resp.json()
        async with http.get(url + "/received?since=2") as resp:
            rest = await resp.json()
        async with http.get(url + "/received?since=-1") as resp:
            refused = resp.status, await resp.json()
    assert len(every) == 3
    assert rest == every[2:]
    assert refused == (400, {"error": "since: a count of records, 0 or more"})
