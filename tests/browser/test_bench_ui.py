"""`opendoctor bench ui` measures what it says: a real page load per run, the graph of
each size drawn (a big one folded into its hosts), beside the two-entity floor."""

from __future__ import annotations

import pytest

from opendoctor.tools import bench_ui

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_each_size_is_loaded_and_drawn_beside_the_floor() -> None:
    results = await bench_ui.measure([60, 2000], runs=2)
    assert [r["entities"] for r in results] == [2, 60, 2000]
    floor, small, big = results
    assert floor["drawn"] == 2 and small["drawn"] == 60
    # Past 1,500 entities the servers are folded into their hosts: one node per host.
    assert big["drawn"] == bench_ui.hosts_for(2000) < 100
    assert all(r["runs"] == 2 and 0 < r["p50_ms"] <= r["max_ms"] for r in results)
