"""One monitor's flood of events is slowed down; the others, and a real storm, are not."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from opendoctor.api.ratelimit import RateLimit
from tests.integration.pipeline.conftest import host_down
from tests.unit.api.conftest import Api, serving


def test_a_bucket_refills_at_its_rate_and_is_all_or_nothing() -> None:
    limit = RateLimit(rate=10.0, burst=20)
    assert limit.take("m", 20, now=0.0) == 0.0  # a storm at once
    assert limit.take("m", 1, now=0.0) == pytest.approx(0.1)
    assert limit.take("other", 20, now=0.0) == 0.0  # another monitor's own bucket
    assert limit.take("m", 5, now=0.2) == pytest.approx(0.3)  # 2 back, 3 missing
    assert limit.take("m", 2, now=0.2) == 0.0  # nothing was taken by the refusal
    assert math.isinf(limit.take("m", 21, now=100.0))  # more than it could ever hold


@pytest.fixture
async def slow(tmp_path: Path) -> AsyncIterator[Api]:
    async for running in serving(
        tmp_path,
        "trusted-headers",
        monitor_tokens={"flood": "f-token", "calm": "c-token"},
        events_rate=1.0,
        events_burst=3,
    ):
        yield running


async def test_a_flooding_monitor_gets_429_and_the_others_do_not(slow: Api) -> None:
    async def report(token: str, host: str = "compute1") -> httpx.Response:
        return await slow.client.put(
            "/events", json=[host_down(host)], headers={"X-Auth-Token": token}
        )

    answers = [(await report("f-token")).status_code for _ in range(4)]
    assert answers == [202, 202, 202, 429]
    refused = await report("f-token")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["errors"][0]["field"] == "body"
    assert (await report("c-token", "compute2")).status_code == 202
    too_many = await slow.client.put(
        "/events", json=[host_down("compute3")] * 4, headers={"X-Auth-Token": "c-token"}
    )
    assert too_many.status_code == 413
    accepted = (await slow.client.get("/v1/events", headers=slow.who("admin"))).json()
    assert sorted(e["reporter"] for e in accepted) == ["calm", "flood", "flood", "flood"]
