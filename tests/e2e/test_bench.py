"""The benchmark command runs end to end and reports figures for every notification."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_notify_reports_percentiles() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opendoctor",
            "bench",
            "notify",
            "--vms",
            "3",
            "--runs",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["vms"] == 3 and result["runs"] == 2
    assert result["notifications"] == 6 and result["not_notified"] == 0
    d2n = result["detection_to_notification"]
    assert 0 < d2n["p50"] <= d2n["p99"] <= d2n["max"] < 1.0
    assert len(result["fault_to_recovered"]) > 0


def test_bench_recovery_reports_fenced_evacuated_serving() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opendoctor",
            "bench",
            "recovery",
            "--sizes",
            "3",
            "--runs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["vms"] == 3 and result["runs"] == 1
    assert result["failed"] == 0 and result["failed_servers"] == []
    assert result["unfenced_runs"] == 0
    [run] = result["per_run"]
    # Fenced before anything moved, and every server serving only after its move began.
    assert 0 < run["fenced"] <= run["first_evacuation"] <= run["last_serving"]
    for figure in ("fenced", "first_evacuation", "last_serving"):
        assert result[figure]["max"] == run[figure]
    assert result["masakari"]["ratio_to_our_max"]["first_evacuation"] > 1


def test_bench_groups_reports_broadcast_and_peer_failure_beside_the_floor() -> None:
    args = ["--sizes", "3", "--runs", "2", "--failure-runs", "1", "--failure-peers", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", "bench", "groups", *args, "--hosts", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    [broadcast] = result["broadcast"]
    assert (broadcast["peers"], broadcast["runs"]) == (3, 2)
    ours, floor = broadcast["broadcast_ms"], broadcast["floor_ms"]
    assert 0 < ours["p50"] <= ours["p99"] < 1000
    assert 0 < floor["p50"] <= floor["p99"]
    failure = result["peer_failure"]
    assert (failure["peers"], failure["runs"]) == (2, 1)
    assert 0 < failure["failed_ms"]["p50"] < 5000
