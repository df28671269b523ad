"""`opendoctor ui screenshots`: each dashboard page, as an operator sees it during a
fault, saved as a PNG (docs/dashboard.md shows them).

A lab of three hosts with servers of two projects, the service, and one story to look
at: compute1 loses power (a fault, its owners told, its servers evacuated), a workflow
runs, and compute3 goes through planned maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, running_stack, wait_for

CHROMIUM = "/usr/bin/chromium"
SPEC = LabSpec(hosts=3, vms=6, projects=["tenant-a", "tenant-b"], ip_prefix="127.83")
PAGES = ("topology", "alarms", "faults", "workflows", "maintenance", "templates")
ECHO = """version: '2.0'
checks:
  tasks:
    look:
      action: std.echo output="looked"
      on-success: [report]
    report:
      action: std.echo output="reported"
"""


async def _story(s: Stack) -> None:
    """Something to see on every page."""
    await s.register_alarms()
    await s.lab.client.fail_host("compute1")

    async def recovered() -> bool:
        faults = await s.get("/v1/faults")
        return any("T11" in f.get("trace", {}) for f in faults)

    with contextlib.suppress(Exception):
        await wait_for("compute1's servers recovered", recovered, 30)
    headers = {**s.admin, "content-type": "text/plain"}
    await s.http.post(s.api + "/v2/workflows", content=ECHO.encode(), headers=headers)
    await s.http.post(s.api + "/v2/executions", json={"workflow_name": "checks"}, headers=s.admin)
    await s.http.post(
        s.api + "/v1/maintenance",
        json={"hosts": ["compute3"], "actions": [{"plugin": "dummy", "type": "host"}]},
        headers=s.admin,
    )


async def take(out: Path, workdir: Path, say: Callable[[str], None]) -> list[Path]:
    """The pages as PNGs in `out` (which must exist)."""
    from playwright.async_api import async_playwright

    saved: list[Path] = []
    async with running_stack(SPEC, workdir) as s:
        say(f"dashboard at {s.api}/ui/")
        await _story(s)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 860})
                await page.goto(s.api + "/ui/")
                await page.fill("input[name=project]", "admin")
                await page.fill("input[name=roles]", "admin")
                await page.click("#login button[type=submit]")
                await page.wait_for_selector("#graph[data-drawn]")
                for name in PAGES:
                    await page.goto(f"{s.api}/ui/#/{name}")
                    await page.wait_for_selector("#live.on")
                    await _settle(page)
                    path = out / f"dashboard-{name}.png"
                    await page.screenshot(path=str(path))
                    saved.append(path)
                    say(f"{name}: {path}")
            finally:
                await browser.close()
    return saved


async def _settle(page: Any) -> None:
    """The page with something chosen (its first row, if it lists things), drawn.
    A page that is live never goes quiet on the network: a picture needs no proof that
    it is done, a moment for its charts' and graphs' first frames does."""
    await asyncio.sleep(0.5)
    rows = page.locator("tr.pick")
    if await rows.count():
        await rows.first.click()
    await asyncio.sleep(1.0)
