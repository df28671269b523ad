"""The `opendoctor` command line."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from opendoctor import __version__
from opendoctor.cli import audit as cli_audit
from opendoctor.cli import bench as cli_bench
from opendoctor.cli import cluster as cli_cluster
from opendoctor.cli import graph as cli_graph
from opendoctor.cli import haas as cli_haas
from opendoctor.cli import maintenance as cli_maintenance
from opendoctor.cli import openstack_lab as cli_openstack_lab
from opendoctor.cli import templates as cli_templates
from opendoctor.cli import ui as cli_ui
from opendoctor.cli import workflow as cli_workflow
from opendoctor.cli.bench import VimChoice
from opendoctor.lab.cli import app as lab_app

app = typer.Typer(
    help="opendoctor: fault management and high availability for virtualised infrastructure.\n\n"
    "Detects host failures, tells the owners of every affected VM within milliseconds, "
    "marks the failed resources in the VIM and recovers them.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(lab_app, name="lab", help="Drive the lab: a small real cloud on this machine.")
app.command()(cli_graph.topology)
app.command()(cli_graph.alarms)
app.command()(cli_graph.rca)
app.command()(cli_audit.audit)
app.add_typer(cli_templates.app, name="template")
app.add_typer(cli_workflow.app, name="workflow")
app.add_typer(cli_maintenance.app, name="maintenance")
app.add_typer(cli_haas.app, name="ha")
app.add_typer(cli_bench.app, name="bench")
app.add_typer(cli_cluster.app, name="cluster")
app.add_typer(cli_openstack_lab.app, name="openstack-lab")
app.add_typer(cli_ui.app, name="ui")

err = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def _roles(given: list[str]) -> list[str]:
    from opendoctor.core.settings import ROLES

    roles: list[str] = []
    for item in given:
        for name in filter(None, (n.strip() for n in item.split(","))):
            if name == "all":
                roles.extend(ROLES)
            elif name in ROLES:
                roles.append(name)
            else:
                raise ValueError(f"--role {name!r}: use one of {', '.join(ROLES)} or all")
    return list(dict.fromkeys(roles))


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option(help="TOML configuration file (see docs/configuration.md)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address the API listens on")] = None,
    port: Annotated[int | None, typer.Option(help="API port (0 picks a free one)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL; default: SQLite in the state dir")
    ] = None,
    lab_url: Annotated[
        str | None, typer.Option(help="lab API URL; default: the running lab's")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text")] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            help="a block this process runs: api, inspector, notifier, monitor or all "
            "(repeat it, or separate with commas; default: all)"
        ),
    ] = None,
    ready_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the service: API, monitor, inspector, notifier and recovery, or some (--role).

    With --role, the process is one of a scaled-out deployment, whose other processes
    run the other roles.

    Settings come from defaults, then the --config file, then OPENDOCTOR_* environment
    variables (nested with a double underscore: OPENDOCTOR_MONITOR__INTERVAL=0.1),
    then these options. Split roles talk over RabbitMQ and share one database: they
    need bus.kind = amqp and a database_url (docs/deployment.md).
    """
    from opendoctor.app import server
    from opendoctor.infra import logs

    overrides: dict[str, Any] = {}
    settings = _settings(config)
    try:
        if database_url:
            overrides["database_url"] = database_url
        if log_format:
            overrides["log_format"] = log_format
        if role:
            overrides["roles"] = _roles(role)
        if overrides:
            # Validated again as a whole: split roles need the amqp bus.
            settings = type(settings).model_validate(settings.model_dump() | overrides)
        listen = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        # Validated again: the rules for listening beyond loopback apply to --host too.
        settings.api = type(settings.api).model_validate(settings.api.model_dump() | listen)
        if lab_url:
            settings.vim = settings.vim.model_copy(update={"lab_url": lab_url})
    except (ValidationError, OSError, ValueError) as exc:
        err.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc
    _check_topology_file(settings)
    _check_vim(settings)
    _check_monitor_tokens(settings)
    logs.setup(settings.log_level, settings.log_format)
    server.run(settings, ready_file)


@app.command()
def monitor(
    api: Annotated[str, typer.Option(help="opendoctor API URL the events are sent to")],
    config: Annotated[Path | None, typer.Option(help="TOML configuration file")] = None,
    lab_url: Annotated[
        str | None, typer.Option(help="lab API URL; default: the running lab's")
    ] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            help="run as one of several replicas sharing this lease (in the database of "
            "database_url, PostgreSQL for several machines): only the leader probes"
        ),
    ] = None,
    ready_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the host monitor on its own: probe every host, send events to the API.

    Use with `opendoctor serve` started with OPENDOCTOR_MONITOR__ENABLED=false. The
    probe interval and misses come from [monitor] in the config or the environment;
    the southbound token from [api] southbound_token. With --lease, replicas elect one
    leader; if it dies another takes over within about monitor.lease_ttl seconds.
    """
    from opendoctor.infra import logs
    from opendoctor.monitor import standalone

    settings = _settings(config)
    if lab_url:
        settings.vim = settings.vim.model_copy(update={"lab_url": lab_url})
    if lease:
        settings.monitor = settings.monitor.model_copy(update={"lease": lease})
    _check_vim(settings)
    logs.setup(settings.log_level, settings.log_format)
    asyncio.run(standalone.run(settings, api, ready_file))


def _check_vim(settings: Any) -> None:
    """Fail early, and say what to do, when there is no VIM to talk to."""
    from opendoctor.core.ports import VimError
    from opendoctor.lab.client import LabClient, LabNotRunning

    if settings.vim.driver == "openstack":
        from opendoctor.controller.openstack import connect

        try:
            connect(settings.vim.openstack, check=True).close()
        except VimError as exc:
            err.print(
                f"[red]{exc}[/red]\nvim.driver is openstack: name a clouds.yaml entry "
                "(vim.openstack.cloud, OPENDOCTOR_VIM__OPENSTACK__CLOUD or OS_CLOUD) or set "
                "the OS_* variables (docs/openstack.md)."
            )
            raise typer.Exit(2) from exc
        return
    if settings.vim.lab_url is not None:
        return
    try:
        settings.vim.lab_url = LabClient.from_state_dir(settings.lab_dir).url
    except LabNotRunning as exc:
        err.print(
            f"[red]{exc}[/red]\nStart one with `opendoctor lab up`, point opendoctor at a "
            "lab with --lab-url or OPENDOCTOR_VIM__LAB_URL, or use a real cloud: "
            "OPENDOCTOR_VIM__DRIVER=openstack with clouds.yaml or the OS_* variables "
            "(docs/openstack.md)."
        )
        raise typer.Exit(2) from exc


def _check_topology_file(settings: Any) -> None:
    from opendoctor.inspector.graph.topology_file import TopologyFileError, parse

    path = settings.inspector.topology_file
    if path is None:
        return
    try:
        parse(path)
    except TopologyFileError as exc:
        err.print(f"[red]invalid topology file:[/red] {exc}")
        raise typer.Exit(2) from exc


def _check_monitor_tokens(settings: Any) -> None:
    from opendoctor.api.auth import Monitors, MonitorTokenError
    from opendoctor.core.secretfile import SecretFileError

    try:
        monitors = Monitors.load(settings.api)
    except MonitorTokenError as exc:
        err.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        settings.notifier.signing()
    except SecretFileError as exc:
        err.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not monitors.tokens and not monitors.anonymous and "api" in settings.roles:
        err.print(
            "[yellow]no monitor tokens:[/yellow] the events API refuses every report until "
            "api.monitor_tokens (or api.monitor_tokens_file) names the monitors"
        )


def _settings(config: Path | None) -> Any:
    from opendoctor.core.settings import load_settings

    try:
        return load_settings(config)
    except (ValidationError, OSError, ValueError) as exc:
        err.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command("guest-agent")
def guest_agent(
    channel: Annotated[
        str,
        typer.Option(
            help="the heartbeat channel: a Unix socket, a character device, tcp:HOST:PORT"
        ),
    ],
    instance_id: Annotated[str, typer.Option(help="this VM's instance ID")],
    health_cmd: Annotated[
        str | None, typer.Option(help="shell command run periodically; exit 0 means healthy")
    ] = None,
    health_timeout: Annotated[
        float, typer.Option(help="seconds before a check counts as failed")
    ] = 1.0,
    interval_ms: Annotated[int, typer.Option(help="proposed challenge interval")] = 100,
    timeout_ms: Annotated[int, typer.Option(help="proposed response timeout")] = 80,
) -> None:
    """Run the guest heartbeat agent (inside a VM).

    It registers with the host over the channel, answers every challenge, and reports
    the result of the health command. The protocol is in docs/guest-heartbeat.md.
    """
    from opendoctor.heartbeat import cli as heartbeat_cli

    argv = ["--channel", channel, "--instance-id", instance_id]
    argv += ["--health-timeout", str(health_timeout)]
    argv += ["--interval-ms", str(interval_ms), "--timeout-ms", str(timeout_ms)]
    if health_cmd:
        argv += ["--health-cmd", health_cmd]
    heartbeat_cli.main(argv)


@app.command()
def consumer(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 5001,
    quiet: Annotated[bool, typer.Option(help="do not print each notification")] = False,
    lab_url: Annotated[
        str | None, typer.Option(help="switch active/standby pairs over through this lab")
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(help="ACTIVE_ID=STANDBY_ID: switch to the standby when the active fails"),
    ] = None,
    amqp: Annotated[
        str | None,
        typer.Option(
            help="also receive callbacks published to AMQP: amqp://user:pass@host:5672/[vhost]"
            "?exchange=NAME[&routing_key=BINDING_KEY][&queue=NAME]"
        ),
    ] = None,
    ready_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the sample consumer: receives alarm callbacks on /failure and prints them.

    GET /received returns every notification with its arrival time (T09). With --lab-url
    it acts as a VNF manager for active/standby pairs (--pair, or PUT /pairs with
    {"active": ID, "standby": ID}): when the active fails it activates the standby and
    switches the lab load balancer over; GET /switchovers says when (T10). With --amqp
    it also consumes callbacks that opendoctor publishes for amqp:// alarm actions.
    With OPENDOCTOR_CONSUMER_SIGNING_KEY set (the project's notifier.signing_keys
    entry), an HTTP callback whose X-OpenDoctor-Signature does not hold is refused.
    """
    from opendoctor.tools import consumer as consumer_mod

    pairs = consumer_mod.parse_pairs(pair or [])
    asyncio.run(consumer_mod.serve(host, port, ready_file, quiet, lab_url, pairs, amqp))


@app.command()
def vnfm(
    api: Annotated[str, typer.Option(help="opendoctor API URL")],
    project: Annotated[str, typer.Option(help="the project it manages the instances of")],
    host: Annotated[
        str, typer.Option(help="address to listen on (opendoctor must reach it: the alarm's URL)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 picks a free one)")] = 5002,
    lab_url: Annotated[
        str | None, typer.Option(help="its servers' lab: switch pairs over, scale in and out")
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(help="ACTIVE_ID=STANDBY_ID: switch to the standby before the active moves"),
    ] = None,
    migration_type: Annotated[
        str, typer.Option(help="what it asks for its instances: MIGRATE, LIVE_MIGRATE, OWN_ACTION")
    ] = "MIGRATE",
    constraints: Annotated[
        bool, typer.Option(help="register its instance group's and instances' constraints")
    ] = False,
    group_id: Annotated[
        str | None, typer.Option(help="its instance group (default: PROJECT-group)")
    ] = None,
    recovery_time: Annotated[
        int, typer.Option(help="seconds a moved instance needs before the next may go")
    ] = 0,
    lead_time: Annotated[int, typer.Option(help="seconds it needs before an instance moves")] = 0,
    nack: Annotated[
        list[str] | None, typer.Option(help="refuse this state (NACK_<STATE>); repeatable")
    ] = None,
    silent: Annotated[bool, typer.Option(help="never answer: the defaults apply")] = False,
    quiet: Annotated[bool, typer.Option(help="do not print what it does")] = False,
    ready_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the sample VNF manager: one project's application manager in planned maintenance.

    It subscribes to the project's maintenance.scheduled notices (an event alarm whose
    action is its /maintenance) and answers each on the session's reply URL: its
    instances (MAINTENANCE), one extra server deleted (SCALE_IN), how each instance is to
    move (PREPARE_MAINTENANCE, PLANNED_MAINTENANCE: a pair's active is first switched
    over to its standby, load balancer included; a standby on the same host is first
    moved off by the manager itself, OWN_ACTION), and those servers created again
    (MAINTENANCE_COMPLETE). GET /status tells what it did.
    """
    from opendoctor.tools import consumer as consumer_mod
    from opendoctor.tools import vnfm as vnfm_mod

    config = vnfm_mod.make_config(
        api,
        project,
        migration_type=migration_type,
        nack=nack,
        silent=silent,
        constraints=constraints,
        group_id=group_id,
        recovery_time=recovery_time,
        lead_time=lead_time,
        quiet=quiet,
    )
    pairs = consumer_mod.parse_pairs(pair or [])
    asyncio.run(vnfm_mod.serve(host, port, ready_file, config, lab_url, pairs))


Story = tuple[int, dict[str, Any]]  # a demo's exit status and its result


class Scenario(StrEnum):
    all = "all"
    uc1 = "uc1"
    uc2 = "uc2"
    maintenance = "maintenance"
    haas = "haas"


@app.command()
def demo(
    scenario: Annotated[
        Scenario,
        typer.Argument(
            help="uc1 (a host fails), uc2 (a VM of a pair fails), maintenance (every host "
            "upgraded, one after another), haas (a cluster's service, then its VM, fails), "
            "or all"
        ),
    ] = Scenario.all,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    workdir: Annotated[
        Path | None, typer.Option(help="where state and logs go (default: a new temp dir)")
    ] = None,
    vim: Annotated[
        VimChoice,
        typer.Option(
            help="lab: the lab's own VIM; openstack: real Nova and Keystone (the OpenStack "
            "test bed: a running one, or one brought up for the run), UC1 only"
        ),
    ] = VimChoice.lab,
) -> None:
    """Run the user stories end to end on a lab of real processes, with their timelines.

    UC1: 3 hosts and 6 VMs of 2 projects; a host is killed (with --vim openstack: a lab
    host and its nova-compute, the 6 servers being Nova's); every owner is told, the host
    marked down, its VMs set to error and evacuated. UC2: server1 (active) and server2
    (standby) behind a load balancer; server1's process is killed; its owner switches
    the load balancer to server2 while clients keep sending requests. Maintenance: the
    same pair (its VNF manager answers every notice, switching the pair over before its
    active's host is emptied) and a server of a project that never answers; a new version
    staged on 3 hosts, which a session empties, power-cycles and returns one by one while
    clients keep sending requests. Exits non-zero if an owner was not notified,
    notification took 1 s or more, or the switch-over failed; for maintenance, if the
    session did not end MAINTENANCE_DONE, a client request failed, a server was lost, a
    host did not come back with the new version or a fault was opened meanwhile. --vim
    openstack runs UC1 only.
    """
    from opendoctor.infra.httpclient import HttpError
    from opendoctor.tools import demo as demo_uc1
    from opendoctor.tools import demo_haas, demo_maintenance, demo_uc2
    from opendoctor.tools.stack import StackError

    console = Console()
    where = workdir or demo_uc1.default_workdir()
    runs: dict[str, Callable[[Path, Console, bool], Coroutine[Any, Any, Story]]] = {
        "uc1": functools.partial(demo_uc1.run, vim=vim.value),
        "uc2": demo_uc2.run,
        "maintenance": demo_maintenance.run,
        "haas": demo_haas.run,
    }
    if vim is VimChoice.openstack:
        if scenario in (Scenario.uc2, Scenario.maintenance, Scenario.haas):
            what = {Scenario.uc2: "UC2", Scenario.haas: "The HA demo"}.get(
                scenario, "The maintenance demo"
            )
            err.print(f"[red]{what} runs on the lab only[/red] (its load balancer is the lab's)")
            raise typer.Exit(2)
        runs.pop("uc2")
        runs.pop("maintenance")
        runs.pop("haas")
    chosen = list(runs) if scenario is Scenario.all else [scenario.value]
    results: dict[str, Any] = {}
    code = 0
    for name in chosen:
        try:
            status, results[name] = asyncio.run(runs[name](where / name, console, as_json))
        except (StackError, HttpError) as exc:
            # A part of the stack that stopped answering (a consumer killed, say) fails
            # the story it was in, with the reason, not with a traceback.
            err.print(f"[red]demo {name} failed:[/red] {exc} (logs in {where / name})")
            results[name] = {"ok": False, "problems": [str(exc)]}
            status = 1
        code = code or status
    if as_json:
        json.dump({"ok": code == 0, **results}, sys.stdout, indent=2, default=str)
        print()
    raise typer.Exit(code)


def main() -> None:
    # What opendoctor writes (its database, state files, logs, the lab's and the
    # cluster's files) is its user's alone; its children inherit this.
    os.umask(0o077)
    app()
