"""`opendoctor bench storm`: its options and what it checks before the storm runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from opendoctor.cli.bench_emit import emit

err = Console(stderr=True)


def storm_command(
    hosts: Annotated[int, typer.Option(min=1, max=253, help="hosts that fail at once")] = 100,
    vms_per_host: Annotated[int, typer.Option(min=1, help="VMs on each failing host")] = 100,
    modes: Annotated[
        str,
        typer.Option(
            help="comma-separated, run in this order: embedded (SQLite, in-process bus), "
            "scaled (PostgreSQL and RabbitMQ, one service process), split (each role its "
            "own process), split-2 (two processes per role)"
        ),
    ] = "embedded,scaled,split,split-2",
    runs: Annotated[int, typer.Option(min=1, help="faults of the 50-VM host after the storm")] = 10,
    amqp_actions: Annotated[
        bool, typer.Option(help="scaled: owners subscribe over AMQP instead of HTTP callbacks")
    ] = False,
    partitions: Annotated[
        int, typer.Option(min=1, max=1024, help="scaled: bus partitions (queues) for events")
    ] = 8,
    pg_url: Annotated[
        str, typer.Option(help="scaled: PostgreSQL to create (and drop) a database in")
    ] = "",
    amqp_url: Annotated[str, typer.Option(help="scaled: the RabbitMQ broker")] = "",
    skip_unavailable: Annotated[
        bool,
        typer.Option(help="skip, with a warning, a mode whose PostgreSQL/RabbitMQ do not answer"),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(help="keep state and logs here (default: a temp dir, removed afterwards)"),
    ] = None,
    kill_restart: Annotated[
        str | None,
        typer.Option(
            metavar="ROLE",
            help="split-2: afterwards, kill ROLE-0 (inspector or notifier) and restart it "
            "while hosts keep failing; print events/s before, while down, after",
        ),
    ] = None,
    window: Annotated[
        float, typer.Option(min=1, help="--kill-restart: seconds of each throughput window")
    ] = 15.0,
    intake_monitors: Annotated[
        int,
        typer.Option(
            min=0,
            help="monitors per --intake-batch size reporting the stormed hosts' VMs while the "
            "storm is delivered (0: no intake measured)",
        ),
    ] = 4,
    intake_batch: Annotated[
        list[int] | None,
        typer.Option(min=1, help="events per intake request; repeat for several (1 and 100)"),
    ] = None,
    intake_servers: Annotated[
        int, typer.Option(min=1, help="stormed servers the intake reports on, across hosts")
    ] = 1000,
    intake_floor_seconds: Annotated[
        float, typer.Option(min=0.5, help="seconds of the intake against the idle service")
    ] = 3.0,
    events_rate: Annotated[
        float,
        typer.Option(
            min=1, help="api.events_rate and api.events_burst of the service during the run"
        ),
    ] = 1_000_000.0,
    with_floor: Annotated[
        bool,
        typer.Option(
            "--floor/--no-floor",
            help="send the storm's callbacks again from a bare aiohttp client (the floor)",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """A storm of host faults, each mode side by side: events/s accepted, notifications/s
    delivered beside the fan-out floor, T01→T09 percentiles, then a 50-VM host fault
    --runs times.

    Each mode starts a real stack (lab, service, one consumer per project) with --hosts x
    --vms-per-host VMs plus one host of 50 VMs, one alarm per VM; the service's monitor
    and recovery are off. All --hosts compute.host.down events are sent at once (PUT
    /events, T01 = when each was sent; one the service refuses with a 5xx is sent again,
    as a monitor would, and counted). Once the storm is handled (its faults stay active)
    the 50-VM host fails and comes back --runs times.

    The floor: once the storm is handled, the callbacks the consumers received are sent
    again, all at once, by a bare aiohttp client in its own process (tools/floor.py) to
    the same consumers, three times; the median is printed as notifications/s and our
    delivery time over its (owners over HTTP only).

    Intake: before the storm, --intake-monitors monitors per --intake-batch size report
    the stormed hosts' VMs (up) to the idle service for --intake-floor-seconds; from the
    moment the storm's events are accepted until its last notification arrived, the
    same monitors report them down (each one's first report opens a fault and tells
    nobody more: the host's fault did). Printed per size: events accepted per second,
    PUT latency p50/p99, refusals, the storm's over the floor's. The monitors share one
    token: the service's rate limit per monitor is set to --events-rate for the run.

    The scaled and split modes run on a database it creates in PostgreSQL (--pg-url, default
    postgresql://postgres@127.0.0.1:5432/postgres or OPENDOCTOR_BENCH_PG) and a RabbitMQ
    prefix of its own (--amqp-url, default amqp://guest:guest@127.0.0.1:5672/ or
    OPENDOCTOR_BENCH_AMQP); both are removed afterwards. If they do not answer, nothing
    runs and the exit code is 2, unless --skip-unavailable: then that mode is skipped
    with a warning. Exits 1 if any notification (or --kill-restart event) never arrived.

    With --kill-restart ROLE, each mode of two or more replicas per role then measures
    rebalancing: every stormed host fails and recovers over and over, one event at a
    time; ROLE-0 is killed (SIGKILL) after --window seconds and restarted --window
    seconds later. Printed: events handled per second before the kill, while it is
    down, and after its partitions came back, side by side, with how long they took to
    come back and how many events were never handled.
    """
    from opendoctor.tools import bench_storm

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in bench_storm.MODES]
    if not chosen or unknown:
        err.print(
            f"[red]unknown mode(s): {', '.join(unknown) or '(none given)'}[/red]; "
            f"known: {', '.join(bench_storm.MODES)}"
        )
        raise typer.Exit(2)
    if kill_restart is not None:
        if kill_restart not in ("inspector", "notifier"):
            err.print(f"[red]--kill-restart: inspector or notifier, not {kill_restart!r}[/red]")
            raise typer.Exit(2)
        if not any((bench_storm.MODES[m].replicas or 0) >= 2 for m in chosen):
            err.print("[red]--kill-restart needs a mode with two replicas per role: split-2[/red]")
            raise typer.Exit(2)
    try:
        bench_storm.check_size(hosts, vms_per_host)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    opts = bench_storm.Options(
        hosts=hosts,
        vms_per_host=vms_per_host,
        runs=runs,
        amqp_actions=amqp_actions,
        partitions=partitions,
        pg_url=pg_url or bench_storm.DEFAULT_PG,
        amqp_url=amqp_url or bench_storm.DEFAULT_AMQP,
        workdir=workdir,
        kill_restart=kill_restart,
        window=window,
        intake=bench_storm.IntakeOptions(
            monitors=intake_monitors,
            batches=tuple(intake_batch or (1, 100)),
            servers=intake_servers,
            floor_seconds=intake_floor_seconds,
            events_rate=events_rate,
        ),
        floor=with_floor,
    )
    console = Console(stderr=True, quiet=as_json)
    problems = asyncio.run(bench_storm.available(chosen, opts))
    for name, problem in problems.items():
        if skip_unavailable:
            err.print(f"[yellow]skipping mode {name}:[/yellow] {problem}")
        else:
            err.print(
                f"[red]mode {name} cannot run:[/red] {problem}\n"
                "Start it, point --pg-url/--amqp-url at it, leave the mode out of --modes, "
                "or pass --skip-unavailable."
            )
    if problems and not skip_unavailable:
        raise typer.Exit(2)
    left = [m for m in chosen if m not in problems]
    if not left:
        err.print("[red]no mode left to run[/red]")
        raise typer.Exit(2)
    result = asyncio.run(bench_storm.storm(left, opts, console, skipped=problems))
    emit(result, as_json, bench_storm.print_storm)
    if bench_storm.missing_total(result):
        err.print("[red]some notifications never arrived[/red]")
        raise typer.Exit(1)
