"""`opendoctor bench ui`: the dashboard's topology page, first paint, in Debian's
Chromium, against a service whose graph holds N entities (hosts, and servers on them).

First paint here is what an operator waits for: from the start of the page's load
(navigation) until the graph is drawn and its layout run, the entities fetched from
`/v1/topology` included. Each size is measured beside the floor: the same page with
one host and one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.table import Table

from opendoctor.api.app import create_app
from opendoctor.app.service import Service
from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server
from opendoctor.core.settings import Settings
from opendoctor.infra.procs import free_port
from opendoctor.tools.bench import percentile
from opendoctor.web import routes as web

CHROMIUM = "/usr/bin/chromium"
SERVERS_PER_HOST = 40
GOAL_MS = 1000.0


def hosts_for(entities: int) -> int:
    return max(1, -(-entities // (SERVERS_PER_HOST + 1)))


def cloud(entities: int) -> MemoryVim:
    """`entities` vertices: hosts, and about SERVERS_PER_HOST servers on each."""
    hosts = hosts_for(entities)
    hs = [Host(f"compute{i}", "127.0.0.1") for i in range(hosts)]
    ss = [
        Server(f"vm-{j}", f"vm-{j}", f"compute{j % hosts}", f"project-{j % 20}")
        for j in range(entities - hosts)
    ]
    return MemoryVim(hs, ss)


@contextlib.asynccontextmanager
async def serving(entities: int, state_dir: Path) -> AsyncIterator[str]:
    # Nothing probes or recovers here: the page, the API and the graph are measured.
    settings = Settings.model_validate(
        {
            "state_dir": state_dir,
            "monitor": {"enabled": False},
            "recovery": {"enabled": False},
            "maintenance": {"enabled": False},
        }
    )
    service = Service(settings, vim=cloud(entities))
    app = create_app(service.facade)
    web.mount(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the service did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def first_paints(url: str, runs: int) -> tuple[list[float], int]:
    from playwright.async_api import async_playwright

    paints: list[float] = []
    drawn = 0
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            # Signed in once (the tab keeps it); every run then is a fresh load.
            await page.goto(url + "/ui/")
            await page.fill("input[name=project]", "admin")
            await page.fill("input[name=roles]", "admin")
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#graph[data-drawn]", timeout=60_000)
            for _ in range(runs):
                await page.reload()
                await page.wait_for_selector("#graph[data-drawn]", timeout=60_000)
                # performance.now() counts from the navigation's start.
                paint: float = await page.evaluate("window.opendoctorTopology.paintedAt")
                paints.append(paint)
                drawn = int(await page.evaluate("window.opendoctorTopology.nodes"))
        finally:
            await browser.close()
    return paints, drawn


async def measure(sizes: list[int], runs: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="opendoctor-bench-ui-") as tmp:
        for n in [2, *sizes]:
            async with serving(n, Path(tmp) / str(n)) as url:
                paints, drawn = await first_paints(url, runs)
            results.append(
                {
                    "entities": n,
                    "drawn": drawn,
                    "p50_ms": percentile(paints, 50),
                    "max_ms": max(paints),
                    "runs": runs,
                }
            )
    return results


def table(console: Console, results: list[dict[str, Any]]) -> None:
    out = Table(title="topology page, navigation → graph drawn (Chromium)")
    for col in (
        "entities",
        "nodes drawn",
        "p50",
        "max",
        "vs floor (p50)",
        f"goal {GOAL_MS:.0f} ms",
    ):
        out.add_column(col, justify="right")
    floor = results[0]["p50_ms"]
    for r in results:
        out.add_row(
            str(r["entities"]),
            str(r["drawn"]),
            f"{r['p50_ms']:.0f} ms",
            f"{r['max_ms']:.0f} ms",
            f"{r['p50_ms'] / floor:.1f} x" if floor else "-",
            "ok" if r["max_ms"] < GOAL_MS else "over",
        )
    console.print(out)
