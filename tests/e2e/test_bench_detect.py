"""`opendoctor bench detect` runs end to end with tiny numbers and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE


def test_bench_detect_reports_speed_floor_and_soak() -> None:
    argv = ["bench", "detect", "--setting", "20ms:3", "--runs", "1", "--soak", "2"]
    argv += ["--hosts", "2", "--vms", "2", "--ip-prefix", "127.98", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "opendoctor", *argv], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["machine"]["cpus"] >= 1 and len(result["machine"]["load_before"]) == 3
    [r] = result["settings"]
    assert (r["setting"], r["interval"], r["misses"], r["runs"], r["not_told"]) == (
        "20ms:3",
        0.02,
        3,
        1,
        0,
    )
    # Down means 3 x 20 ms without an answer, and the last answer came at most one
    # interval before the kill, so at least 40 ms after it, less the few milliseconds a
    # late wake-up of the prober can move that answer back (39.8 ms was seen in CI).
    assert 30 <= r["detected_ms"]["p50"] <= r["told_ms"]["p50"] < 5000
    assert 30 <= r["floor"]["detected_ms"]["p50"] < 5000
    assert 0 < r["floor"]["rtt_ms"]["p50"] <= r["floor"]["rtt_ms"]["p99"]
    assert r["detected_over_floor_p50"] > 0
    soak = r["soak"]
    assert soak["seconds"] >= 2 and soak["hosts"] == {"0.01": 1, "0.05": 1}
    for counts in soak["false_reports"].values():
        assert set(counts) == {HOST_DOWN, HOST_UNREACHABLE}
    assert 0 < soak["service_cpu_per_host"] < 2 and 0 < r["floor"]["cpu_per_host"] < 1
