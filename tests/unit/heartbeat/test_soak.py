"""The soak and detection measurements run end to end (briefly: the figures themselves
come from the benchmark command, not from here)."""

from __future__ import annotations

from opendoctor.heartbeat.soak import detection, percentiles, soak


def test_percentiles_use_nearest_rank_in_milliseconds() -> None:
    assert percentiles([]) == {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    values = [i / 1000 for i in range(1, 101)]
    assert percentiles(values) == {"p50_ms": 51.0, "p99_ms": 100.0, "max_ms": 100.0}


async def test_short_soak_of_healthy_agents_has_no_false_alarm() -> None:
    result = await soak(3, 1.0, health_cmd="true")
    assert result["false_alarms"] == 0, result["reports"]
    assert result["challenges"] >= 3 * 5
    assert result["responses"] >= result["challenges"] - 3  # the last ones may be in flight
    assert 0 < result["latency"]["p50_ms"] <= result["latency"]["max_ms"]


async def test_detection_measures_every_fault_kind() -> None:
    result = await detection(2)
    for kind in ("missed_hung", "missed_dead", "unhealthy", "restart"):
        figures = result[kind]
        assert 0 < figures["p50_ms"] <= figures["max_ms"], (kind, figures)
    # Whether a restart outlasts the default 150 ms grace depends on how fast Python starts
    # on this machine (the grace itself is tested in test_supervisor and test_agent); what
    # holds everywhere is that one restart makes at most one report and its clearing.
    assert result["restart"]["false_alarms"] <= 2 * 2
