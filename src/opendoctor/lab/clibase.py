"""What the `opendoctor lab` commands share: consoles, the state dir, calling the lab."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from opendoctor.core.settings import default_state_dir
from opendoctor.lab.client import LabClient, LabError
from opendoctor.lab.runner import running_state

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="OPENDOCTOR_LAB_DIR",
        help="Directory of the lab's lab.json and lab.log (default: <state dir>/lab, "
        "e.g. ~/.local/state/opendoctor/lab).",
        show_default=False,
    ),
]


def state_dir_of(state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else default_state_dir() / "lab"


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def lab_url(state_dir: Path) -> str:
    data = running_state(state_dir)
    if data is None:
        fail(f"no lab is running from {state_dir} (start one with 'opendoctor lab up')")
    return str(data["url"])


def call(url: str, action: Callable[[LabClient], Awaitable[T]]) -> T:
    """Run one lab call (or a few) to completion; a refusal ends the command with its reason."""

    async def run() -> T:
        async with LabClient(url) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except LabError as exc:
        fail(str(exc))


def yes(flag: bool) -> str:
    return "yes" if flag else "no"
