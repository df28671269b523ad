"""`opendoctor bench storm` on a tiny storm: every notification arrives, every figure is
there, and the scaled mode leaves neither its database nor its queues behind.

The scaled mode needs PostgreSQL and RabbitMQ (the ones the other tests use): without
them its test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from rich.console import Console

from opendoctor.tools import bench_storm
from tests import pg
from tests.integration.amqp.conftest import AMQP_URL
from tests.servers import need

HOSTS, VMS, RUNS = 4, 5, 2


def options(tmp_path: Path) -> bench_storm.Options:
    return bench_storm.Options(
        hosts=HOSTS,
        vms_per_host=VMS,
        runs=RUNS,
        pg_url=pg.ADMIN_URL,
        amqp_url=AMQP_URL,
        ip_prefix="127.71",
        workdir=tmp_path,
        # A small intake for a small storm: the scaled modes accept a few thousand events
        # a second, and what they accept is handled before the storm starts.
        intake=bench_storm.IntakeOptions(monitors=1, floor_seconds=0.5),
    )


def check_mode(result: dict[str, Any], http_owners: bool = True) -> None:
    storm = result["storm"]
    assert storm["events"] == HOSTS and storm["refused"] == 0
    assert storm["expected"] == storm["notifications"] == HOSTS * VMS
    assert storm["missing"] == 0
    assert storm["accepted_per_s"] > 0 and storm["delivered_per_s"] > 0
    # The same callbacks from the bare client, every one of them arrived (owners told
    # over AMQP have no HTTP callbacks to send again).
    bare = storm["floor"]
    if http_owners:
        assert bare["callbacks"] == HOSTS * VMS and bare["missed"] == 0 and bare["runs"] == 3
        assert bare["per_s"] > 0 and bare["ratio"] > 0
    else:
        assert bare is None
    t = storm["t01_t09"]
    assert 0 < t["p50"] <= t["p90"] <= t["p99"] <= t["max"] < 10
    assert set(storm["stages"]) >= {"T01_T02", "T01_T09", "T01_T04", "T01_T03", "T02_T09"}
    assert storm["stages"]["T01_T02"]["p50"] > 0
    assert storm["settled_seconds"] > 0
    assert storm["cpu_seconds"]["wall"] > 0
    single = result["single"]
    assert single["vms"] == bench_storm.SINGLE_VMS and single["runs"] == RUNS
    assert single["notifications"] == bench_storm.SINGLE_VMS * RUNS
    assert single["missing"] == 0
    assert 0 < single["t01_t09"]["p50"] <= single["t01_t09"]["p99"] < 10
    assert 0 < single["last"]["p50"] <= single["last"]["p99"]
    assert result["setup"]["stack_start"] > 0 and result["setup"]["alarms_registered"] > 0


async def test_storm_in_embedded_mode(tmp_path: Path) -> None:
    opts = options(tmp_path)
    result = await bench_storm.storm(["embedded"], opts, Console(quiet=True))

    assert result["hosts"] == HOSTS and result["vms"] == HOSTS * VMS
    check_mode(result["modes"]["embedded"])
    assert result["ratios"] == {}
    assert bench_storm.missing_total(result) == 0
    out = io.StringIO()
    bench_storm.print_storm(Console(width=160, file=out), result)
    assert "storm: notifications delivered /s" in out.getvalue()
    assert "bare client (floor)" in out.getvalue()


async def test_storm_scaled_and_split_beside_embedded(tmp_path: Path) -> None:
    opts = options(tmp_path)
    modes = ["embedded", "scaled", "split-2"]
    problems = await bench_storm.available(modes, opts)
    if problems:
        need(f"the scaled modes cannot run: {problems}")
    opts.amqp_actions = True  # the owners on AMQP too: the scaled-out path end to end
    result = await bench_storm.storm(modes, opts, Console(quiet=True))

    check_mode(result["modes"]["embedded"], http_owners=False)
    scaled = result["modes"]["scaled"]
    check_mode(scaled, http_owners=False)
    assert "partition_hold" in scaled["storm"]
    ratios = result["ratios"]["scaled/embedded"]
    assert ratios["storm.delivered_per_s"] > 0 and ratios["single.t01_t09.p99"] > 0
    out = io.StringIO()
    bench_storm.print_storm(Console(width=200, file=out), result)
    text = out.getvalue()
    assert "scaled / embedded" in text and "100 ms aim" in text
    # Two processes per role, every one of them used: nothing missing either.
    split = result["modes"]["split-2"]
    check_mode(split, http_owners=False)
    assert "split-2 / embedded" in text

    # Nothing left behind: the run's database is dropped, its queues and exchanges gone.
    conn = await asyncpg.connect(pg.ADMIN_URL, timeout=5)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", scaled["database"]
        )
    finally:
        await conn.close()
    assert found == 0
    prefix = scaled["bus_prefix"]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in (f"{prefix}.events.0", f"{prefix}.events.dead", f"{prefix}.notifications.0"):
            channel = await connection.channel()
            with pytest.raises(ChannelNotFoundEntity):
                await channel.declare_queue(name, passive=True)
        for name in (f"{prefix}.events", f"{prefix}.alarms"):
            channel = await connection.channel()
            with pytest.raises(ChannelNotFoundEntity):
                await channel.declare_exchange(name, passive=True)
    finally:
        await connection.close()
