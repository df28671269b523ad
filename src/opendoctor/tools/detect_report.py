"""The tables of `opendoctor bench detect` (see `bench_detect` for what is measured)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE


def _f(stats: dict[str, float] | None, key: str) -> str:
    return f"{stats[key]:.1f}" if stats and key in stats else "—"


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.2f} %"


def print_detect(console: Console, result: dict[str, Any]) -> None:
    machine = result["machine"]
    load = " ".join(f"{x:.2f}" for x in machine["load_before"])
    after = " ".join(f"{x:.2f}" for x in machine["load_after"])
    console.print(
        f"machine: {machine['cpus']} CPUs, load average {load} before, {after} after "
        "(shared: the times are rough)"
    )
    speed = Table(title="host failure → detected → owners told (milliseconds)")
    for col in (
        "setting", "runs", "VMs",
        "T00→T01 p50", "p99", "max",
        "T00→told p50", "p99", "max",
        "floor T00→T01 p50", "p99", "floor RTT p50", "p99", "ours/floor p50",
    ):  # fmt: skip
        speed.add_column(col, justify="right")
    for r in result["settings"]:
        det, told, fl = r["detected_ms"], r["told_ms"], r["floor"]
        ratio = r["detected_over_floor_p50"]
        speed.add_row(
            r["setting"] + (" (default)" if r["setting"] == result["default"] else ""),
            str(r["runs"]),
            str(r["vms"]) + (f" ({r['not_told']} not told)" if r["not_told"] else ""),
            _f(det, "p50"), _f(det, "p99"), _f(det, "max"),
            _f(told, "p50"), _f(told, "p99"), _f(told, "max"),
            _f(fl["detected_ms"], "p50"), _f(fl["detected_ms"], "p99"),
            f"{fl['rtt_ms']['p50']:.3f}" if fl["rtt_ms"] else "—",
            f"{fl['rtt_ms']['p99']:.3f}" if fl["rtt_ms"] else "—",
            "—" if ratio is None else f"{ratio:.2f}",
        )  # fmt: skip
    console.print(speed)
    soak = Table(title=f"soak: false reports under loss ({result['soak_mode']})")
    for col in (
        "setting", "seconds", "hosts at 1 %", "down", "unreachable",
        "hosts at 5 %", "down", "unreachable",
        "service CPU / host", "floor prober CPU / host",
    ):  # fmt: skip
        soak.add_column(col, justify="right")
    for r in result["settings"]:
        s = r["soak"]
        low, high = s["false_reports"]["0.01"], s["false_reports"]["0.05"]
        soak.add_row(
            r["setting"], f"{s['seconds']:.0f}",
            str(s["hosts"]["0.01"]), _count(low[HOST_DOWN]), _count(low[HOST_UNREACHABLE]),
            str(s["hosts"]["0.05"]), _count(high[HOST_DOWN]), _count(high[HOST_UNREACHABLE]),
            _pct(s["service_cpu_per_host"]), _pct(r["floor"]["cpu_per_host"]),
        )  # fmt: skip
    console.print(soak)
    off = {r["setting"]: r["soak"]["fenced_and_restored"] for r in result["settings"]}
    for label, hosts in off.items():
        if hosts:
            fenced = ", ".join(hosts)
            console.print(f"[yellow]{label}: fenced after a false report, powered on: {fenced}")
    console.print(
        "CPU: process CPU seconds per second, per probed host (the service's while it "
        "only probes; the bare prober's for its one host)."
    )


def _count(n: int) -> str:
    return f"[red]{n}[/red]" if n else "0"
