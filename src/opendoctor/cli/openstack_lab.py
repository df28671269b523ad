"""`opendoctor openstack-lab up | status | down`: a real OpenStack on this machine."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from opendoctor.lab.clibase import fail

if TYPE_CHECKING:
    from opendoctor.lab.openstack.spec import BedSpec

app = typer.Typer(
    help="A real OpenStack on this machine, to test opendoctor against: Keystone (fernet "
    "tokens), Placement, Glance, Neutron (its API only) and Nova (api, conductor, "
    "scheduler, and one nova-compute with the fake driver per lab host: compute1..3), "
    "installed into a virtualenv of their own (2025.1 'Epoxy', pinned) on first use, on "
    "the running MariaDB and RabbitMQ. Log in with OS_CLIENT_CONFIG_FILE=<dir>/clouds.yaml "
    "and OS_CLOUD=opendoctor-bed. See docs/openstack.md, 'The test bed'.",
    short_help="Start, inspect and stop the OpenStack test bed.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

DIR = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        envvar="OPENDOCTOR_OPENSTACK_DIR",
        help="The bed's configs, keys, logs and openstack.json "
        "(default: ~/.local/state/opendoctor/openstack).",
        show_default=False,
    ),
]
HOME = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="OPENDOCTOR_OPENSTACK_HOME",
        help="Where the OpenStack venv is installed and kept "
        "(default: ~/.cache/opendoctor/openstack).",
        show_default=False,
    ),
]


def _spec(
    directory: Path | None,
    home: Path | None,
    database: str | None = None,
    lab_prefix: str | None = None,
) -> BedSpec:
    from opendoctor.lab.openstack.spec import BedSpec

    spec = BedSpec()
    if lab_prefix is not None:
        spec = replace(spec, lab_prefix=lab_prefix)
    if directory is not None:
        spec = replace(spec, directory=directory)
    if home is not None:
        spec = replace(spec, home=home)
    if database is not None:
        spec = replace(spec, database=database)
    return spec


@app.command()
def up(
    database: Annotated[
        str,
        typer.Option(
            envvar="OPENDOCTOR_OPENSTACK_DATABASE",
            help="MariaDB/MySQL as a user that may create databases (one per service, "
            "named od_*), without a database name",
        ),
    ] = "mysql+pymysql://root@127.0.0.1:3306",
    lab_prefix: Annotated[
        str,
        typer.Option(
            help="the --ip-prefix of the lab whose hosts compute1..3 stand for: Nova "
            "reports compute N at <prefix>.1.N, where opendoctor's monitor probes it",
        ),
    ] = "127.0",
    directory: DIR = None,
    home: HOME = None,
) -> None:
    """Install (first time: about a minute), create the databases and a RabbitMQ vhost,
    start every service in the background and wait until Nova sees its three compute
    hosts up (about a minute and a half). They run until `opendoctor openstack-lab down`."""
    from opendoctor.lab.openstack import bed

    try:
        spec = _spec(directory, home, database, lab_prefix)
    except ValueError as exc:
        fail(str(exc))
    with err.status("starting the OpenStack test bed ...") as shown:
        try:
            state = asyncio.run(bed.up(spec, lambda step: shown.update(step + " ...")))
        except Exception as exc:
            fail(f"the bed did not come up: {exc}\n(logs: {spec.logs})")
    took = state["took"]
    out.print(
        f"OpenStack test bed up in {took['total']:.0f} s"
        + (f" (install {took['install']:.0f} s)" if took["installed_now"] else "")
    )
    _print(state)
    out.print(
        f"clients: OS_CLIENT_CONFIG_FILE={spec.directory / 'clouds.yaml'} OS_CLOUD={bed.CLOUD}"
    )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    directory: DIR = None,
    home: HOME = None,
) -> None:
    """Each process (alive, its API's HTTP status) and Nova's compute services (up or
    down, forced down). Exits 1 if a process is not alive."""
    from opendoctor.lab.openstack import bed

    spec = _spec(directory, home)
    state = asyncio.run(bed.status(spec))
    if state is None:
        fail(f"no OpenStack test bed is running from {spec.directory}")
    alive = all(p["alive"] for p in state["processes"])
    if as_json:
        json.dump(state, sys.stdout, indent=2)
        print()
    else:
        _print(state)
    if not alive:
        raise typer.Exit(1)


def _print(state: dict[str, Any]) -> None:
    table = Table(title="OpenStack test bed")
    for column in ("process", "pid", "alive", "url", "http"):
        table.add_column(column)
    for p in state["processes"]:
        alive = p.get("alive", True)
        table.add_row(
            p["name"],
            str(p["pid"]),
            "yes" if alive else "[red]no[/red]",
            p["url"],
            str(p.get("http", "")),
        )
    out.print(table)
    if state.get("compute_services"):
        hosts = Table(title="Nova compute services")
        for column in ("host", "state", "status", "forced down"):
            hosts.add_column(column)
        for s in sorted(state["compute_services"], key=lambda s: str(s["host"])):
            forced = "yes" if s.get("forced_down") else ""
            hosts.add_row(s["host"], s["state"], s["status"], forced)
        out.print(hosts)
    elif state.get("compute_services_error"):
        out.print(f"[red]Nova's compute services: {state['compute_services_error']}[/red]")


@app.command()
def down(directory: DIR = None, home: HOME = None) -> None:
    """Stop every process, drop the bed's databases and vhost, remove its configs and
    keys. The venv stays (the next `up` is fast); so do the logs."""
    from opendoctor.lab.openstack import bed

    spec = _spec(directory, home)
    stopped = asyncio.run(bed.down(spec))
    out.print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")
