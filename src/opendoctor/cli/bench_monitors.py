"""`opendoctor bench monitors`: its options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from opendoctor.cli.bench_emit import emit

err = Console(stderr=True)


def monitors_command(
    adapters: Annotated[
        str,
        typer.Option(
            help="comma-separated, in this order: alertmanager, collectd (a notification), "
            "collectd-threshold (collectd's threshold plugin), collectd-values "
            "(opendoctor's thresholds), queue (RabbitMQ), zabbix (the media type's body)"
        ),
    ] = "alertmanager,collectd,collectd-threshold,collectd-values,queue,zabbix",
    runs: Annotated[int, typer.Option(min=1, help="faults per monitor")] = 10,
    amqp_url: Annotated[
        str,
        typer.Option(
            envvar="OPENDOCTOR_BENCH_AMQP_URL",
            help="the RabbitMQ broker the service consumes Doctor events from (a password: "
            "give it in the environment, not on the command line)",
        ),
    ] = "amqp://guest:guest@127.0.0.1:5672/",
    workdir: Annotated[
        Path | None,
        typer.Option(help="keep state and logs here (default: a temp dir, removed afterwards)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Each monitor's send → owners told, and its fault's end → cleared.

    A lab of three hosts with two servers each (two projects, a consumer process each),
    the service as its own process, a real Alertmanager and collectd (Debian's packages)
    and a RabbitMQ queue. Each run makes a host's fault the tool's way, waits until
    every owner of its servers had their callback, sends the fault's end and waits
    until the fault is cleared.
    """
    from opendoctor.infra.amqpurl import AmqpError
    from opendoctor.infra.httpclient import HttpError
    from opendoctor.infra.procs import ChildFailed
    from opendoctor.tools import bench_monitors
    from opendoctor.tools.monitor_tools import ToolMissing
    from opendoctor.tools.stack import StackError

    chosen = [a.strip() for a in adapters.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in bench_monitors.ADAPTERS]
    if unknown or not chosen:
        known = ", ".join(bench_monitors.ADAPTERS)
        err.print(f"[red]--adapters: {', '.join(unknown) or 'none'}; known: {known}[/red]")
        raise typer.Exit(2)
    console = Console(stderr=True, quiet=as_json)
    try:
        results = asyncio.run(bench_monitors.monitors(chosen, runs, amqp_url, console, workdir))
    except (StackError, HttpError, AmqpError, ToolMissing, ChildFailed) as exc:
        err.print(f"[red]bench monitors failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(results, as_json, bench_monitors.table)
