"""`opendoctor bench …`: the benchmarks that print the figures the project is judged by."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from opendoctor.cli.bench_emit import emit
from opendoctor.cli.bench_monitors import monitors_command
from opendoctor.cli.bench_storm import storm_command

app = typer.Typer(help="Benchmarks that print the figures the project is judged by.")
err = Console(stderr=True)
app.command("storm")(storm_command)
app.command("monitors")(monitors_command)


class VimChoice(StrEnum):
    """Which VIM a demo or benchmark runs on."""

    lab = "lab"
    openstack = "openstack"


# Real Nova boots and evacuates a server in seconds on two cores, the lab in milliseconds.
DEFAULT_SIZES = {"lab": [1, 50, 1000], "openstack": [1, 10]}
DEFAULT_RUNS = {"lab": 20, "openstack": 5}


@app.command("notify")
def bench_notify(
    vms: Annotated[
        list[int] | None,
        typer.Option(
            help="VMs on the failed host; repeat for several sizes (lab: 1 50 1000, "
            "openstack: 1 10)"
        ),
    ] = None,
    runs: Annotated[
        int | None, typer.Option(min=1, help="host failures per size (lab: 20, openstack: 5)")
    ] = None,
    vim: Annotated[
        list[VimChoice] | None,
        typer.Option(
            help="lab (default), openstack (real Nova: the OpenStack test bed, a running "
            "one or one brought up for the run); repeat to compare them in one table"
        ),
    ] = None,
    with_floor: Annotated[
        bool,
        typer.Option(
            "--floor/--no-floor",
            help="after each run, send the same callbacks to the same consumers with a bare "
            "aiohttp client (the fan-out floor) and print ours beside it",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Host failure → owners notified, against real consumer processes.

    Prints detection-to-notification (T01→T09) percentiles per size and the time until
    the last owner is notified, beside the fan-out floor: the time a bare aiohttp client
    takes from its first send until the last of the same callbacks arrived, and the
    ratio ours/floor.
    """
    from opendoctor.tools import bench

    async def measure() -> list[dict[str, Any]]:
        console = Console(stderr=True, quiet=as_json)
        results = []
        for chosen in vim or [VimChoice.lab]:
            sizes = vms or DEFAULT_SIZES[chosen.value]
            count = runs or DEFAULT_RUNS[chosen.value]
            results += await bench.notify(sizes, count, console, chosen.value, with_floor)
        return results

    from opendoctor.infra.httpclient import HttpError
    from opendoctor.tools.stack import StackError

    try:
        results = asyncio.run(measure())
    except (StackError, HttpError) as exc:
        err.print(f"[red]bench notify failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(results, as_json, bench.print_notify)


@app.command("recovery")
def bench_recovery(
    sizes: Annotated[
        list[str] | None,
        typer.Option(
            metavar="N[,N...]",
            help="servers on the failed host: repeat, or comma-separated (default: 10,100,1000)",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="host failures per size")] = 5,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="the service's recovery.concurrency: servers moved in parallel"
        ),
    ] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Host failure → fenced → first evacuation → last server serving, on the lab.

    For each size, a lab of two hosts with that many servers on one, each host's Redfish
    BMC its fence device, the service as its own process. Each run powers off the host
    holding the servers and reads the fault's timeline: detection to fenced (T01→T05), to
    the first evacuation call (T01→T06) and to the last server serving again elsewhere
    (T01→T11), beside Masakari's defaults (it waits 180 s before it evacuates). Exits 1
    if a server did not recover or a host was not fenced.
    """
    from opendoctor.infra.httpclient import HttpError
    from opendoctor.tools import bench_recovery
    from opendoctor.tools.stack import StackError

    try:
        chosen = [int(v) for value in sizes or [] for v in value.split(",") if v.strip()]
    except ValueError:
        err.print(f"[red]--sizes: whole numbers, not {sizes}[/red]")
        raise typer.Exit(2) from None
    if any(n < 1 for n in chosen):
        err.print("[red]--sizes: at least one server per size[/red]")
        raise typer.Exit(2)
    console = Console(stderr=True, quiet=as_json)
    try:
        results = asyncio.run(
            bench_recovery.recovery(
                chosen or bench_recovery.DEFAULT_SIZES, runs, console, concurrency
            )
        )
    except (StackError, HttpError) as exc:
        err.print(f"[red]bench recovery failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(results, as_json, bench_recovery.print_recovery)
    if problems := bench_recovery.problems(results):
        err.print("[red]not recovered as it should be:[/red]\n" + "\n".join(problems))
        raise typer.Exit(1)


@app.command("switchover")
def bench_switchover(
    runs: Annotated[int, typer.Option(min=1, help="kills of the active server")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """UC2 repeated: the active VM of a pair is killed, its owner switches over.

    Prints detection time, notification and switch-over times (T00→T01, T00→T09,
    T00→T10) and the client requests that failed, as percentiles.
    """
    from opendoctor.tools import bench_uc2

    result = asyncio.run(bench_uc2.switchover(runs, Console(stderr=True, quiet=as_json)))
    emit(result, as_json, bench_uc2.print_switchover)


@app.command("groups")
def bench_groups(
    sizes: Annotated[str, typer.Option(help="comma-separated peers per broadcast")] = "10,100",
    runs: Annotated[int, typer.Option(min=1, help="broadcasts per size")] = 50,
    failure_runs: Annotated[int, typer.Option(min=0, help="VMs killed, one per run")] = 5,
    failure_peers: Annotated[int, typer.Option(min=1, help="peers of each killed VM")] = 10,
    hosts: Annotated[int, typer.Option(min=1, max=20, help="lab hosts the peers spread on")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Server-group messaging on the lab: broadcast latency (guest send → every peer's
    application) beside a floor of plain Unix sockets, and peer state after a VM failure.
    """
    from opendoctor.tools import bench_groups as groups

    peers = [int(n) for n in sizes.split(",") if n.strip()]
    console = Console(stderr=True, quiet=as_json)
    result = asyncio.run(groups.run(peers, runs, failure_runs, failure_peers, hosts, console))
    emit(result, as_json, groups.print_groups)


@app.command("heartbeat")
def bench_heartbeat(
    runs: Annotated[int, typer.Option(min=1, help="faults of each kind to detect")] = 20,
    soak_vms: Annotated[int, typer.Option(min=0, help="healthy guests for the soak")] = 10,
    soak_seconds: Annotated[float, typer.Option(min=0, help="length of the soak")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Guest heartbeat: detection times of dead, hung and unhealthy guests, and a soak.

    Real guest-agent processes against the host-side supervisor with default timings.
    The soak counts false alarms among healthy guests (the target is none; run it for
    600 s to reproduce the 10-minute figure).
    """
    from opendoctor.heartbeat import soak

    async def measure() -> dict[str, Any]:
        found = await soak.detection(runs)
        soaked = await soak.soak(soak_vms, soak_seconds) if soak_vms and soak_seconds else None
        return {"detection": found, "soak": soaked}

    emit(asyncio.run(measure()), as_json, _print_heartbeat)


def _print_heartbeat(console: Console, result: dict[str, Any]) -> None:
    runs = result["detection"]["runs"]
    table = Table(title=f"guest heartbeat: detection with default timings ({runs} runs each, ms)")
    for col in ("fault", "p50", "p99", "max"):
        table.add_column(col, justify="left" if col == "fault" else "right")
    for name, stats in result["detection"].items():
        if isinstance(stats, dict) and "p50_ms" in stats:
            table.add_row(name, *(f"{stats[k]:.1f}" for k in ("p50_ms", "p99_ms", "max_ms")))
    console.print(table)
    if result["soak"] is not None:
        s = result["soak"]
        console.print(
            f"soak: {s['vms']} healthy guests for {s['seconds']:.0f} s: {s['challenges']} "
            f"challenges, {s['responses']} responses, {s['false_alarms']} false alarms; "
            f"response latency p50 {s['latency']['p50_ms']:.2f} ms, "
            f"p99 {s['latency']['p99_ms']:.2f} ms"
        )


@app.command("graph")
def bench_graph_command(
    hosts: Annotated[int, typer.Option(min=1, help="compute hosts")] = 10_000,
    servers_per_host: Annotated[int, typer.Option(min=0, help="servers on each host")] = 50,
    hosts_per_switch: Annotated[int, typer.Option(min=1, help="hosts behind each switch")] = 40,
    lookups: Annotated[int, typer.Option(min=1, help="faults evaluated per kind")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """The entity graph at scale: build time, memory, fault and RCA lookups, GC pauses.

    The default builds 10,000 hosts with 500,000 servers and as many ports (about a
    million entities).
    """
    from opendoctor.tools import bench_graph

    result = bench_graph.run(
        hosts=hosts,
        servers_per_host=servers_per_host,
        hosts_per_switch=hosts_per_switch,
        lookups=lookups,
    )
    emit(result, as_json, bench_graph.print_graph)


@app.command("workflow")
def bench_workflow_command(
    runs: Annotated[
        int | None, typer.Option(min=1, help="sequential executions per latency figure (200)")
    ] = None,
    executions: Annotated[
        int | None, typer.Option(min=1, help="5-task chains started at once (1000)")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="run on this database instead of a fresh SQLite file (e.g. "
            "postgresql+asyncpg://127.0.0.1:5432/bench_wf; created if missing)"
        ),
    ] = None,
    crash: Annotated[bool, typer.Option(help="measure the kill -9 recovery")] = True,
    quick: Annotated[
        bool, typer.Option("--quick", help="20 runs per figure, 200 executions at once")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """The workflow engine embedded, each figure beside Mistral 23.0.0's and the goal.

    Start → first action (a std.http GET to a local receiver) and a std.noop task, p50/p99;
    a 5-task std.noop chain, start → SUCCESS; --executions chains started at once (wall
    time, tasks/s, memory, group commits); a with-items task over 100 items, concurrency
    10; then an engine process killed with SIGKILL halfway through 100 chains of POSTs and
    a new one on the same database (none lost, none run twice). Exits 1 if an execution
    did not succeed or the crash lost or repeated work.
    """
    from dataclasses import replace

    from opendoctor.tools import bench_workflow, bench_workflow_report

    opts = (
        bench_workflow.Options.quick(database_url, crash)
        if quick
        else bench_workflow.Options(database_url=database_url, crash=crash)
    )
    opts = replace(opts, runs=runs or opts.runs, executions=executions or opts.executions)
    console = Console(stderr=True, quiet=as_json)
    try:
        result = asyncio.run(
            bench_workflow.measure(opts, lambda step: console.print(f"[dim]… {step}[/dim]"))
        )
    except bench_workflow.BenchError as exc:
        err.print(f"[red]bench workflow failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(result, as_json, bench_workflow_report.print_workflow)
    if problems := bench_workflow.problems(result):
        err.print("[red]not as it should be:[/red]\n" + "\n".join(problems))
        raise typer.Exit(1)


@app.command("ui")
def bench_ui(
    sizes: Annotated[
        str, typer.Option(help="entities in the graph, comma-separated (the floor, 2, is added)")
    ] = "1000,10000",
    runs: Annotated[int, typer.Option(min=1, help="page loads per size")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """The dashboard's topology page: from navigation to the graph on screen, in Debian's
    Chromium (apt install chromium), with graphs of the given sizes beside a graph of
    two entities (the floor). The goal: under 1 s with 10,000 entities."""
    from opendoctor.tools import bench_ui as bench

    try:
        wanted = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        err.print(f"[red]--sizes:[/red] comma-separated counts, not {sizes!r}")
        raise typer.Exit(2) from None
    emit(asyncio.run(bench.measure(wanted, runs)), as_json, bench.table)


@app.command("detect")
def bench_detect(
    setting: Annotated[
        list[str] | None,
        typer.Option(
            metavar="INTERVAL:MISSES",
            help="probe interval and misses, e.g. 10ms:3; repeat for several (default: "
            "10ms:3 10ms:4 20ms:3 50ms:3, the default setting among them)",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="host kills per setting")] = 20,
    vms: Annotated[int, typer.Option(min=1, help="VMs on the killed host, each alarmed")] = 10,
    hosts: Annotated[
        int, typer.Option(min=2, max=200, help="lab hosts, all of them soaked (half at 1 %)")
    ] = 6,
    soak: Annotated[
        float, typer.Option(min=0, help="seconds of soak under 1 % and 5 % loss per setting")
    ] = 600,
    ip_prefix: Annotated[
        str, typer.Option(help="the lab's loopback block, 127.N (another than a running lab's)")
    ] = "127.97",
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Host failure → detected (T00→T01) → owners told, per probe setting, beside the
    floor of a bare UDP echo at the same setting; then a soak with 1 % and 5 % of the
    heartbeat answers lost that counts false "down" and "unreachable" reports, and the
    prober's CPU cost."""
    from opendoctor.infra.httpclient import HttpError
    from opendoctor.lab.runner import LabStartError
    from opendoctor.tools import bench_detect, detect_report
    from opendoctor.tools.detect_floor import FloorError
    from opendoctor.tools.stack import StackError

    try:
        chosen = [bench_detect.Setting.parse(s) for s in setting or []]
    except ValueError as exc:
        err.print(f"[red]--setting:[/red] {exc}")
        raise typer.Exit(2) from None
    console = Console(stderr=True, quiet=as_json)
    try:
        result = asyncio.run(
            bench_detect.detect(
                chosen or bench_detect.DEFAULT_SETTINGS, runs, vms, hosts, soak, console, ip_prefix
            )
        )
    except (StackError, HttpError, FloorError, LabStartError, ValueError) as exc:
        err.print(f"[red]bench detect failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(result, as_json, detect_report.print_detect)
