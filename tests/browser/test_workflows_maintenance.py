"""The dashboard's workflows, maintenance and templates pages in a real browser, under
the page's own Content-Security-Policy, against a live service and lab: what an
operator sees of runs and sessions as they go, without reloading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import ADMIN, Stack, running_stack

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

# compute1 runs vm1 and compute2 vm2 (round-robin), both tenant-a's.
SPEC = LabSpec(hosts=2, vms=2, projects=["tenant-a"], ip_prefix="127.82")
# Nobody answers the notices here: each step waits this long for the owners' answers.
FAST_MAINTENANCE = {
    "OPENDOCTOR_MAINTENANCE__REPLY_TIMEOUT": "2",
    "OPENDOCTOR_MAINTENANCE__COMPLETE_WAIT": "1",
    "OPENDOCTOR_MAINTENANCE__MOVE_TIMEOUT": "30",
}
LIVE = 15_000  # ms for what the stream brings
SESSION_ENDS = 90_000  # ms for a session of one host to be over

# Greets, fails on purpose (the error handled), then holds until it is cancelled; the
# task `never` is not reached.
WORKFLOW = """
version: '2.0'
dashboard_demo:
  description: Greets, fails on purpose, then holds until it is cancelled.
  input:
    - greeting: hello
  tasks:
    greet:
      action: std.echo output=<% $.greeting %>
      publish:
        said: <% task().result %>
      on-success: [check]
    check:
      action: std.fail
      input:
        error_data: no luck
      on-success: [never]
      on-error: [hold]
    hold:
      action: std.sleep seconds=3600
    never:
      action: std.noop
"""

# Markup in a template's description must show as text.
MARKUP_TEMPLATE = """name: markup_shown_as_text
description: "Shows <b>markup</b> as text: <img src=x id=injected>"
entities:
  alarm: {category: ALARM, name: compute.host.down}
  host: {type: host}
scenarios:
  - condition: alarm [on] host
    actions:
      - raise_alarm: {target: host, name: host.watched, severity: WARNING, causing_alarm: alarm}
"""
BUILT_IN = {
    "host_down",
    "host_unreachable",
    "instance_down",
    "port_down",
    "power_and_rack",
    "switch_down",
}


async def signed_in(browser: Browser, api: str, where: str) -> tuple[Page, list[str]]:
    """A page opened at `#/<where>`, signed in as the admin, live; and the console's
    errors as they come (a script or a fetch the policy blocks is one)."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{api}/ui/#/{where}")
    await page.fill("input[name=project]", "admin")
    await page.fill("input[name=roles]", "admin")
    await page.click("#login button[type=submit]")
    await expect(page.locator("#live.on")).to_be_attached(timeout=LIVE)
    # Gone if the document is ever loaded again: what follows must come live.
    await page.evaluate("() => { window.stillTheSamePage = true; }")
    return page, errors


async def same_page(page: Page) -> bool:
    found: bool = await page.evaluate("() => window.stillTheSamePage === true")
    return found


async def api(s: Stack, method: str, path: str, **kw: Any) -> Any:
    resp = await s.http.request(
        method, s.api + path, headers={**ADMIN, **kw.pop("headers", {})}, **kw
    )
    assert resp.ok, f"{method} {path}: HTTP {resp.status} {resp.body[:300]!r}"
    return resp.json()


async def graph_nodes(page: Page) -> dict[str, dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        "() => window.opendoctorWorkflows.cy.nodes().map(n => n.data())"
    )
    return {n["id"]: n for n in found}


async def click_node(page: Page, name: str) -> None:
    """A click where the graph draws the task, as an operator's."""
    box = await page.locator("#wf-graph").bounding_box()
    at = await page.evaluate(
        "(name) => window.opendoctorWorkflows.cy.getElementById(name).renderedPosition()", name
    )
    assert box is not None
    await page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])


async def test_a_run_is_drawn_as_its_tasks_and_follows_live(
    browser: Browser, tmp_path: Path
) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        page, errors = await signed_in(browser, s.api, "workflows")
        await expect(page.locator("#wf-executions")).to_be_attached()
        text = {"content-type": "text/plain"}
        await api(s, "POST", "/v2/workflows", content=WORKFLOW.encode(), headers=text)
        started = await api(s, "POST", "/v2/executions", json={"workflow_name": "dashboard_demo"})
        run = started["id"]

        # The new run appears, running, and (nothing else being chosen) is shown.
        row = page.locator(f'#wf-executions tr[data-execution="{run}"]')
        await expect(row).to_contain_text("dashboard_demo", timeout=LIVE)
        await expect(row).to_contain_text("RUNNING")
        await row.click()
        tasks = page.locator("#wf-tasks")
        await expect(tasks.locator('tr[data-task="greet"]')).to_contain_text(
            "SUCCESS", timeout=LIVE
        )
        await expect(tasks.locator('tr[data-task="check"]')).to_contain_text("ERROR")
        # A timer task is RUNNING_DELAYED while it waits.
        await expect(tasks.locator('tr[data-task="hold"]')).to_contain_text("RUNNING", timeout=LIVE)

        # The graph: a node per task, coloured by its state.
        await expect(page.locator(f'#wf-graph[data-execution="{run}"]')).to_be_attached()
        nodes = await graph_nodes(page)
        assert nodes["greet"]["state"] == "SUCCESS" and nodes["greet"]["colour"] == "#2e7d32"
        assert nodes["check"]["state"] == "ERROR" and nodes["check"]["colour"] == "#c62828"
        assert nodes["hold"]["state"].startswith("RUNNING")
        assert nodes["hold"]["colour"] == "#1565c0"
        # With the definition's transitions, the task never reached is drawn too.
        assert nodes["never"]["state"] == "not run"
        edges = await page.evaluate(
            "() => window.opendoctorWorkflows.cy.edges().map(e => e.data())"
        )
        drawn = {(e["source"], e["on"], e["target"]) for e in edges}
        assert drawn == {
            ("greet", "on-success", "check"),
            ("check", "on-success", "never"),
            ("check", "on-error", "hold"),
        }

        # A click on a task: its input, result, what it published, its timings.
        await click_node(page, "greet")
        detail = page.locator('#wf-task[data-task="greet"]')
        await expect(detail).to_contain_text("SUCCESS")
        await expect(detail).to_contain_text('"output": "hello"')
        await expect(detail).to_contain_text('"said": "hello"')
        await expect(detail).to_contain_text(re.compile(r"started \d{4}-\d\d-\d\d"))
        await click_node(page, "check")
        await expect(page.locator('#wf-task[data-task="check"]')).to_contain_text("no luck")

        # A state change arrives live: the run cancelled, its holding task with it.
        await api(s, "PUT", f"/v2/executions/{run}", json={"state": "CANCELLED"})
        await expect(row).to_contain_text("CANCELLED", timeout=LIVE)
        await expect(page.locator('#wf-execution[data-state="CANCELLED"]')).to_be_attached(
            timeout=LIVE
        )
        await expect(tasks.locator('tr[data-task="hold"]')).to_contain_text("CANCELLED")
        assert (await graph_nodes(page))["hold"]["state"] == "CANCELLED"
        assert await same_page(page)
        assert errors == [], errors
        await page.close()


async def test_a_maintenance_session_is_followed_to_its_end(
    browser: Browser, tmp_path: Path
) -> None:
    async with running_stack(SPEC, tmp_path, service_env=FAST_MAINTENANCE) as s:
        page, errors = await signed_in(browser, s.api, "maintenance")
        await expect(page.locator("#mt-sessions")).to_contain_text("No session yet.")
        body = {"hosts": ["compute2"], "actions": [{"plugin": "dummy"}]}
        session = (await api(s, "POST", "/v1/maintenance", json=body))["session_id"]

        # The new session is listed and, nothing else being chosen, shown, until its end.
        row = page.locator(f'#mt-sessions tr[data-session="{session}"]')
        await expect(row).to_contain_text("compute2", timeout=LIVE)
        shown = page.locator(f'#mt-session[data-session="{session}"]')
        await expect(shown).to_be_attached(timeout=LIVE)
        await expect(page.locator('#mt-session[data-state="MAINTENANCE_DONE"]')).to_be_attached(
            timeout=SESSION_ENDS
        )
        await expect(row).to_contain_text("MAINTENANCE_DONE")
        await expect(row).to_contain_text("100 %")

        # Each host's progress, the instance moved off it, the owner's (missing) answers.
        host = page.locator('#mt-hosts tr[data-host="compute2"]')
        await expect(host).to_contain_text("returned")
        servers = {v["name"]: v for v in await api(s, "GET", "/v1/servers")}
        moved = page.locator(f'#mt-instances tr[data-instance="{servers["vm2"]["id"]}"]')
        await expect(moved).to_contain_text("vm2")
        await expect(moved).to_contain_text("tenant-a")
        await expect(moved).to_contain_text("MIGRATE")
        await expect(moved).to_contain_text("compute2 → compute1")
        detail = await api(s, "GET", f"/v1/maintenance/{session}/detail")
        [asked] = detail["projects"]
        assert asked["project_id"] == "tenant-a" and asked["reply"] is None and asked["defaults"]
        owner = page.locator('#mt-projects tr[data-project="tenant-a"]')
        await expect(owner).to_contain_text(asked["asked"])
        await expect(owner).to_contain_text(", ".join(asked["defaults"]))
        log = page.locator("#mt-log li")
        await expect(log).to_have_count(len(detail["log"]))
        await expect(log.last).to_contain_text(detail["log"][-1]["what"])
        assert await same_page(page)
        assert errors == [], errors
        await page.close()


async def test_the_templates_in_force_and_one_as_yaml(browser: Browser, tmp_path: Path) -> None:
    async with running_stack(SPEC, tmp_path) as s:
        yaml = {"content-type": "application/yaml"}
        await api(s, "POST", "/v1/templates", content=MARKUP_TEMPLATE.encode(), headers=yaml)
        page, errors = await signed_in(browser, s.api, "templates")
        rows = page.locator("#tp-list tr[data-template]")
        await expect(rows).to_have_count(len(BUILT_IN) + 1)
        listed = await rows.evaluate_all(
            "rows => rows.map(r => [r.dataset.template, r.cells[1].textContent])"
        )
        assert {name for name, origin in listed if origin == "built-in"} == BUILT_IN

        # One template shown: its YAML exactly as stored, as text.
        await page.locator('#tp-list tr[data-template="host_down"]').click()
        stored = await api(s, "GET", "/v1/templates/host_down")
        yaml_shown = page.locator('#tp-template[data-template="host_down"] #tp-yaml')
        await expect(yaml_shown).to_have_text(stored["text"], use_inner_text=False)

        # Markup in a template is shown, never run or rendered.
        await page.locator('#tp-list tr[data-template="markup_shown_as_text"]').click()
        shown = page.locator('#tp-template[data-template="markup_shown_as_text"]')
        await expect(shown).to_contain_text("<img src=x id=injected>")
        await expect(page.locator("#tp-yaml")).to_contain_text("<b>markup</b>")
        assert await page.locator("#injected, #tp-template b").count() == 0
        assert errors == [], errors
        await page.close()
