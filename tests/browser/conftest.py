"""Debian's Chromium, driven by Playwright, against a live service and lab."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        # As root in a container, Chromium's own sandbox cannot start.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(autouse=True)
def patient_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stacks' services probe every 50 ms rather than every 10 ms. Chromium starting
    and drawing fills this 2-core machine, and a lab host answers its probes from a thread
    that needs its process's interpreter lock: in CI a host went unanswered for six 10 ms
    beats, was taken for dead, and fenced, before the test failed it on purpose. These
    tests are about what the page shows, not about detection (`bench detect` is)."""
    monkeypatch.setenv("OPENDOCTOR_MONITOR__INTERVAL", "0.05")
