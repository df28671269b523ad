"""The dashboard's topology page in a real browser: what an operator sees, live, and
what a project's user may see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import running_stack

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SPEC = LabSpec(hosts=2, vms=4, projects=["tenant-a", "tenant-b"], ip_prefix="127.79")


async def signed_in(
    browser: Browser, api: str, project: str, roles: str, probes: bool = False
) -> tuple[Page, list[str]]:
    """A page signed in, the topology drawn; and the console's errors as they come.
    `probes`: the test polls the page with evaluated strings, which the page's own
    policy (no eval) forbids, so the policy is lifted for it."""
    page = await browser.new_page(bypass_csp=probes)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(api + "/ui/")
    await page.fill("input[name=project]", project)
    await page.fill("input[name=roles]", roles)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#graph[data-drawn]")
    return page, errors


async def nodes(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        "window.opendoctorTopology.cy.nodes().map(n => n.data())"
    )
    return found


async def test_an_operator_sees_the_cloud_and_a_host_failing_live(
    browser: Browser, tmp_path: Path
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        page, _ = await signed_in(browser, s.api, "admin", "admin", probes=True)
        drawn = await nodes(page)
        assert {n["id"] for n in drawn if n["type"] == "host"} == {"host:compute1", "host:compute2"}
        assert sum(n["type"] == "server" for n in drawn) == 4
        await page.wait_for_selector("#live.on")
        # A host dies: its vertex turns to error and the fault is announced, no reload.
        await s.lab.client.fail_host("compute1")
        state = "window.opendoctorTopology.cy.getElementById('host:compute1').data('state')"
        await page.wait_for_function(f"{state} === 'ERROR'", timeout=10_000)
        await page.wait_for_selector(
            "#banner >> text=compute.host.down on compute1", timeout=10_000
        )
        await page.close()


async def test_a_project_sees_only_its_own_servers(browser: Browser, tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        # Under the page's own Content-Security-Policy: everything it needs is its own.
        page, errors = await signed_in(browser, s.api, "tenant-a", "member")
        await page.wait_for_selector("#live.on")
        drawn = await nodes(page)
        assert drawn and {n["project"] for n in drawn} == {"tenant-a"}
        assert all(n["type"] == "server" for n in drawn)
        assert errors == [], errors
        await page.close()
