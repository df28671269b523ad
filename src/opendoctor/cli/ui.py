"""`opendoctor ui`: the dashboard's own commands."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="The dashboard (/ui/ of a running service; docs/dashboard.md).")


@app.command("screenshots")
def screenshots(
    out: Annotated[Path, typer.Option(help="where the PNGs go")] = Path("docs/img"),
) -> None:
    """Run a lab and the service through a fault, a workflow and a maintenance session,
    and save each dashboard page as a PNG (Debian's Chromium: apt install chromium)."""
    from opendoctor.tools import ui_shots

    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="opendoctor-ui-") as tmp:
        saved = asyncio.run(ui_shots.take(out, Path(tmp), console.print))
    console.print(f"{len(saved)} pages saved in {out}")
