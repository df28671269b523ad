"""The table `opendoctor bench storm` prints: every mode side by side, with ratios."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.tools.storm_modes import BASELINE, MODES, TARGET_P99
from opendoctor.tools.storm_rebalance import print_kill_restart

ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("storm: events accepted /s", ("storm", "accepted_per_s"), "rate"),
    ("storm: notifications delivered /s", ("storm", "delivered_per_s"), "rate"),
    ("storm: the same, bare client (floor) /s", ("storm", "floor", "per_s"), "rate"),
    ("storm: delivery time ÷ the floor's", ("storm", "floor", "ratio"), "x"),
    ("storm: notifications delivered", ("storm", "notifications"), "count"),
    ("storm: notifications missing", ("storm", "missing"), "count"),
    ("storm: PUT /events refused, sent again", ("storm", "refused"), "count"),
    ("storm: T01→T09 p50 (ms)", ("storm", "t01_t09", "p50"), "ms"),
    ("storm: T01→T09 p90 (ms)", ("storm", "t01_t09", "p90"), "ms"),
    ("storm: T01→T09 p99 (ms)", ("storm", "t01_t09", "p99"), "ms"),
    ("storm: T01→T09 max (ms)", ("storm", "t01_t09", "max"), "ms"),
    ("storm: all events accepted after (ms)", ("storm", "accept_seconds"), "ms"),
    ("intake during the storm: events /s (best size)", ("storm", "intake", "storm_per_s"), "rate"),
    ("intake, idle service (floor): events /s", ("storm", "intake", "floor_per_s"), "rate"),
    ("storm: per fault T01→T02 p50 (ms)", ("storm", "stages", "T01_T02", "p50"), "ms"),
    ("storm: per fault T01→T02 max (ms)", ("storm", "stages", "T01_T02", "max"), "ms"),
    ("storm: per fault T02→T09 p50 (ms)", ("storm", "stages", "T02_T09", "p50"), "ms"),
    ("storm: per fault T02→T03 p50 (ms)", ("storm", "stages", "T02_T03", "p50"), "ms"),
    ("storm: partition held per event p50 (ms)", ("storm", "partition_hold", "p50"), "ms"),
    ("storm: servers set to error, last (ms)", ("storm", "settled_seconds"), "ms"),
    ("storm: CPU s until handled, service", ("storm", "cpu_seconds", "service"), "s"),
    ("storm: CPU s, PostgreSQL", ("storm", "cpu_seconds", "postgresql"), "s"),
    ("storm: CPU s, RabbitMQ", ("storm", "cpu_seconds", "rabbitmq"), "s"),
    ("storm: CPU s, consumers", ("storm", "cpu_seconds", "consumers"), "s"),
    ("storm: CPU s, lab", ("storm", "cpu_seconds", "lab"), "s"),
    ("storm: CPU s, bench", ("storm", "cpu_seconds", "bench"), "s"),
    ("storm: CPU s, other processes", ("storm", "cpu_seconds", "other"), "s"),
    ("storm: machine CPU busy (%)", ("storm", "cpu_seconds", "machine_busy"), "pct"),
    ("50-VM fault: T01→T09 p50 (ms)", ("single", "t01_t09", "p50"), "ms"),
    ("50-VM fault: T01→T09 p99 (ms)", ("single", "t01_t09", "p99"), "ms"),
    ("50-VM fault: last owner p50 (ms)", ("single", "last", "p50"), "ms"),
    ("50-VM fault: last owner p99 (ms)", ("single", "last", "p99"), "ms"),
    ("50-VM fault: notifications missing", ("single", "missing"), "count"),
    ("50-VM fault: PUT /events refused", ("single", "refused"), "count"),
    ("set-up: stack started (s)", ("setup", "stack_start"), "s"),
    ("set-up: VMs created (s)", ("setup", "vms_created"), "s"),
    ("set-up: alarms registered (s)", ("setup", "alarms_registered"), "s"),
]


def _compared(path: tuple[str, ...], unit: str) -> bool:
    """Whether a ratio between modes means something: not for counts, nor for servers
    that only the scaled modes use."""
    return unit != "count" and path[-1] not in ("postgresql", "rabbitmq", "other")


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each other mode's figures over the embedded mode's ("scaled / embedded")."""
    base = results.get(BASELINE)
    out: dict[str, dict[str, float | None]] = {}
    if base is None:
        return out
    for name, result in results.items():
        if name == BASELINE:
            continue
        these: dict[str, float | None] = {}
        for _label, path, unit in ROWS:
            if not _compared(path, unit):
                continue
            a, b = figure(result, path), figure(base, path)
            these[".".join(path)] = None if a is None or not b else a / b
        out[f"{name}/{BASELINE}"] = these
    return out


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value * 1000:.1f}"
    if unit == "s":
        return f"{value:.1f}"
    if unit == "pct":
        return f"{value * 100:.0f}"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "x":
        return f"{value:.2f} x"
    return f"{value:,.0f}"


def print_storm(console: Console, result: dict[str, Any]) -> None:
    modes: dict[str, Any] = result["modes"]
    table = Table(
        title=f"storm: {result['hosts']} host faults x {result['vms_per_host']} VMs "
        f"({result['vms']} notifications), then a {result['single_vms']}-VM host fault "
        f"x {result['runs']}"
    )
    table.add_column("figure")
    for name, r in modes.items():
        table.add_column(f"{name}\n({r['title']})", justify="right")
    compared = [n for n in modes if n != BASELINE and BASELINE in modes]
    for name in compared:
        table.add_column(f"{name} / {BASELINE}", justify="right")
    for label, path, unit in ROWS:
        cells = [_cell(figure(r, path), unit) for r in modes.values()]
        for name in compared:
            ratio = result["ratios"][f"{name}/{BASELINE}"].get(".".join(path))
            shown = _compared(path, unit) and ratio is not None
            cells.append(f"{ratio:.2f}x" if shown else "")
        table.add_row(label, *cells)
    console.print(table)
    for name, r in modes.items():
        storm_ = r.get("storm", {})
        if storm_.get("refused"):
            console.print(
                f"[yellow]{name}:[/yellow] {storm_['refused']} PUT /events of the storm were "
                f"refused and sent again ({'; '.join(storm_['refusals'])})"
            )
    for name, reason in result.get("skipped", {}).items():
        console.print(f"[yellow]{name} skipped:[/yellow] {reason}")
    for name, r in modes.items():
        p99 = figure(r, ("single", "t01_t09", "p99"))
        if p99 is None or not MODES[name].backends:
            continue
        verdict = "[green]under[/green]" if p99 < TARGET_P99 else "[red]not under[/red]"
        console.print(
            f"{name}: the {result['single_vms']}-VM host fault's T01→T09 p99 is "
            f"{p99 * 1000:.1f} ms, {verdict} the {TARGET_P99 * 1000:.0f} ms aim"
        )
    print_intake(console, modes)
    print_kill_restart(console, result)
    console.print(f"{result['cpus']} CPUs; load average before the run {result['load_before']:.2f}")


def missing_total(result: dict[str, Any]) -> int:
    total = 0
    for r in result["modes"].values():
        total += int(figure(r, ("storm", "missing")) or 0)
        total += int(figure(r, ("single", "missing")) or 0)
        total += int(figure(r, ("kill_restart", "lost")) or 0)
    return total


def _refusals(figures: dict[str, Any] | None) -> str:
    if not figures or not figures["refused"]:
        return "0"
    return ", ".join(f"{n} x {kind}" for kind, n in sorted(figures["refused"].items()))


def print_intake(console: Console, modes: dict[str, Any]) -> None:
    """Per mode and request size: events accepted while the storm was delivered, beside
    the same flow against the idle service before it."""
    found = {
        name: r["storm"]["intake"] for name, r in modes.items() if r.get("storm", {}).get("intake")
    }
    if not found:
        return
    any_intake = next(iter(found.values()))
    table = Table(
        title=f"intake: {any_intake['monitors']} monitors per request size keep reporting "
        "the stormed hosts' VMs down while the storm is delivered; floor: the same "
        f"requests (VMs up) against the idle service for {any_intake['floor_seconds']:.0f} s"
    )
    for column in ("mode", "events / request", "events/s storm", "events/s floor", "ratio"):
        table.add_column(column, justify="right")
    for column in ("PUT p50 storm / floor (ms)", "PUT p99 storm / floor (ms)", "refused"):
        table.add_column(column, justify="right")
    for name, intake in found.items():
        for batch, flow in intake["flows"].items():
            storm, floor = flow["storm"], flow["floor"] or {}
            ratio = flow["ratio"]

            def both(q: str, storm: dict[str, Any] = storm, floor: dict[str, Any] = floor) -> str:
                a = storm["latency"].get(q)
                b = floor.get("latency", {}).get(q)
                return f"{_cell(a, 'ms')} / {_cell(b, 'ms')}"

            table.add_row(
                name,
                batch,
                _cell(storm["events_per_s"], "rate"),
                _cell(floor.get("events_per_s"), "rate"),
                "—" if ratio is None else f"{ratio:.2f}x",
                both("p50"),
                both("p99"),
                f"storm {_refusals(storm)}; floor {_refusals(floor)}",
            )
    console.print(table)
    for name, intake in found.items():
        console.print(
            f"{name}: api.events_rate and api.events_burst set to {intake['events_rate']:,.0f} "
            "for the run (every monitor of the bench reports with one token); intake events "
            f"left to handle after the storm took {intake.get('backlog_seconds', 0):.1f} s more"
        )
