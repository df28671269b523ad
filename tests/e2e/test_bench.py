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
