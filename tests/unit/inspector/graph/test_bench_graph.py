from __future__ import annotations

import gc
import io

from rich.console import Console

from opendoctor.tools import bench_graph


def test_small_run_reports_right_counts() -> None:
    result = bench_graph.run(hosts=50, servers_per_host=3, hosts_per_switch=40, lookups=20)
    servers = 50 * 3
    switches = 2  # 40 hosts per switch, rounded up
    assert result["switches"] == switches
    assert result["servers"] == servers
    assert result["entities"] == 1 + switches + 50 + 2 * servers
    # zone→switch, switch→host, host→server, port→server
    assert result["edges"] == switches + 50 + 2 * servers
    assert result["host_fault_servers"] == 3
    assert result["switch_fault_servers"] in (40 * 3, 10 * 3)
    # One switch alarm, one per host behind switch 0, one per server on those hosts.
    assert result["alarms"] == 1 + 40 + 40 * 3
    assert result["rca_chain"] == (2, 40 + 40 * 3)
    for key in ("host_fault_us", "switch_fault_us", "rca_upstream_us", "rca_downstream_us"):
        stats = result[key]
        assert 0 < stats["p50"] <= stats["p99"] <= stats["max"]
    # Through the built-in templates: a host fault tells each of its servers' owners and
    # marks the host and its servers down; a switch fault tells every owner behind it.
    assert result["rules_templates"] == 6
    assert (result["rules_host_notified"], result["rules_host_marked"]) == (3, 4)
    assert result["rules_switch_notified"] in (40 * 3, 10 * 3)
    assert result["rules_rca_chain"] == 2
    assert result["rules_left_over"] == 0  # every fault cleared, every deduction undone
    for key in ("rules_host_eval", "rules_host_clear", "rules_switch_eval", "rules_rca"):
        stats = result[key]
        assert 0 < stats["p50"] <= stats["p99"] <= stats["max"]
    assert result["build_s"] > 0
    # Building a graph this size runs the collector; its longest pause is one of the two
    # phases' and is measured, not left at its default.
    assert result["gc_collections"] > 0
    assert result["gc_max_pause_ms"] > 0
    assert result["gc_max_pause_ms"] == max(
        result["gc_max_pause_build_ms"], result["gc_max_pause_queries_ms"]
    )
    # The run leaves nothing frozen behind.
    assert gc.get_freeze_count() == 0

    out = io.StringIO()
    bench_graph.print_graph(Console(file=out, width=200), result)
    text = out.getvalue()
    assert "entities" in text and f"{result['entities']:,}" in text
    assert "host fault" in text and "garbage collection" in text
    assert "switch fault through the templates" in text


def test_rss_is_read() -> None:
    assert bench_graph.rss_bytes() > 0
