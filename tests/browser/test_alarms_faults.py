"""The dashboard's faults and alarms pages in a real browser: a host failing as an
operator watches it, and what a project's user is shown of the same failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, owner, running_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SPEC = LabSpec(hosts=2, vms=4, projects=["tenant-a", "tenant-b"], ip_prefix="127.81")
FIRING = "/v2/alarms?q.field=state&q.op=eq&q.value=alarm"
# A host's failure is handled within a second here; generous for a loaded machine.
LIVE = 15_000


async def signed_in(
    browser: Browser, api: str, project: str, roles: str, at: str
) -> tuple[Page, list[str]]:
    """A page signed in on the dashboard page `at`, under the page's own
    Content-Security-Policy (the tests only read the DOM: nothing is evaluated); and the
    console's errors as they come."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{api}/ui/#/{at}")
    await page.fill("input[name=project]", project)
    await page.fill("input[name=roles]", roles)
    await page.click("#login button[type=submit]")
    return page, errors


async def firing(s: Stack, project: str) -> list[dict[str, Any]]:
    """The project's own alarms in state alarm, as the API answers the project."""
    found: list[dict[str, Any]] = await s.get(FIRING, owner(project))
    return found


async def test_an_operator_follows_a_host_failure_from_fault_to_root_cause(
    browser: Browser, tmp_path: Path
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        await s.register_alarms()  # the owners to be told
        page, errors = await signed_in(browser, s.api, "admin", "admin", "faults")
        await page.wait_for_selector("#fault-table")
        await page.wait_for_selector("#live.on")
        assert await page.locator("#fault-table tr[data-fault-id]").count() == 0

        # The host dies: its fault comes into the table as it opens, no reload.
        await s.lab.client.fail_host("compute1")
        row = page.locator('#fault-table tr[data-host="compute1"]')
        await expect(row).to_have_count(1, timeout=LIVE)
        fault_id = await row.get_attribute("data-fault-id")
        await expect(row.locator("td").first).to_have_text("compute.host.down")

        # Its timeline: detected, affected servers found, owners notified.
        await row.click()
        chart = '#fault-chart[data-bars~="T01"][data-bars~="T02"][data-bars~="T09"]'
        await page.wait_for_selector(chart, timeout=LIVE)
        # The owners told, one line per notification, at least one delivered by now.
        fault = await s.get(f"/v1/faults/{fault_id}")
        assert fault["notifications"], "the owners' alarms should have matched"
        await expect(page.locator("#owners tbody tr[data-status]")).to_have_count(
            len(fault["notifications"]), timeout=LIVE
        )
        await page.wait_for_selector('#owners tr[data-status="delivered"]', timeout=LIVE)
        await expect(page.locator("#recovery tbody tr[data-result]")).to_have_count(
            len(fault["affected"]), timeout=LIVE
        )

        # The alarms: the host's is listed, and a click draws its causal chain.
        await page.click("#nav a[data-page=alarms]")
        alarm = page.locator(
            '#alarm-table tr[data-name="compute.host.down"][data-on="host:compute1"]'
        )
        await expect(alarm).to_have_count(1, timeout=LIVE)
        assert await alarm.get_attribute("data-key") == f"alarm:{fault_id}"
        await page.wait_for_selector('#alarm-counts [data-severity="CRITICAL"]')
        await alarm.click()
        drawn = await page.wait_for_selector("#rca[data-drawn]", timeout=LIVE)
        assert int(await drawn.get_attribute("data-drawn") or "0") > 0
        history = page.locator("#alarm-history tbody tr", has_text="compute.host.down")
        await expect(history.first).to_be_visible()
        assert errors == [], errors
        await page.close()


async def test_a_project_sees_no_host_fault_and_only_its_own_alarms(
    browser: Browser, tmp_path: Path
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        await s.register_alarms()
        hit = sorted({v["project_id"] for v in await s.get("/v1/servers?host=compute1")})
        assert hit, "the lab should place servers on compute1"
        project = hit[0]
        other = next(p for p in SPEC.projects if p != project)
        await s.lab.client.fail_host("compute1")
        await wait_for(f"{project}'s alarms to fire", lambda: firing(s, project), timeout=30)
        own = {a["alarm_id"] for a in await firing(s, project)}

        # Faults are the infrastructure's: the page says so, and shows none.
        page, errors = await signed_in(browser, s.api, project, "member", "faults")
        await page.wait_for_selector("#faults-denied")
        assert "only admins" in await page.inner_text("#faults-denied")
        assert await page.locator("#fault-table").count() == 0
        assert "compute1" not in await page.inner_text("#page")

        # Its alarms: its own that fire, no one else's, and one's history on a click.
        await page.click("#nav a[data-page=alarms]")
        await page.wait_for_selector("#alarm-table[data-loaded]")
        rows = page.locator("#alarm-table tr[data-alarm-id]")
        assert {await r.get_attribute("data-alarm-id") for r in await rows.all()} == own
        assert {await r.get_attribute("data-project") for r in await rows.all()} == {project}
        assert await page.locator("#rca").count() == 0  # no root-cause graph for a project
        await rows.first.click()
        await page.wait_for_selector("#alarm-history tbody tr")
        assert errors == [], errors
        await page.close()

        # Another project is shown none of them.
        page, errors = await signed_in(browser, s.api, other, "member", "alarms")
        await page.wait_for_selector("#alarm-table[data-loaded]")
        shown = {
            await r.get_attribute("data-alarm-id")
            for r in await page.locator("#alarm-table tr[data-alarm-id]").all()
        }
        assert shown == {a["alarm_id"] for a in await firing(s, other)}
        assert not shown & own
        assert errors == [], errors
        await page.close()
