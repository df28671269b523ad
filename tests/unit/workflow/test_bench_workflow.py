"""`opendoctor bench workflow` measures what it says: every execution it waits for
succeeds, its figures are real, and after the kill -9 nothing is lost or run twice.
Correctness only: the figures themselves are the bench's to print, not a test's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from opendoctor.cli.main import app
from opendoctor.store.db import Database
from opendoctor.tools import bench_workflow_report
from opendoctor.tools.bench_workflow import CHAIN, Options, problems
from opendoctor.tools.bench_workflow_crash import Receiver, crash


def _table(result: dict[str, object]) -> str:
    out = io.StringIO()
    bench_workflow_report.print_workflow(Console(file=out, width=220), result)
    return out.getvalue()


def test_the_embedded_figures_come_from_executions_that_all_succeeded() -> None:
    run = CliRunner().invoke(app, ["bench", "workflow", "--quick", "--no-crash", "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    quick = Options.quick()
    assert result["config"]["options"]["runs"] == quick.runs
    assert result["config"]["database_kind"] == "sqlite"
    # Warm-ups and every measured execution, each waited for until its end was stored.
    waited = 3 * (quick.runs + quick.warmup) + quick.executions + quick.item_runs + quick.warmup
    assert result["states"] == {"SUCCESS": waited}
    for key in ("first_action", "noop_task", "chain", "with_items"):
        stats = result[key]
        assert 0 < stats["p50"] <= stats["p99"] <= stats["max"], key
    at_once = result["at_once"]
    assert at_once["executions"] == quick.executions
    assert at_once["tasks"] == quick.executions * CHAIN
    assert 0 < at_once["all_started_s"] <= at_once["wall_s"]
    assert at_once["tasks_per_s"] == pytest.approx(at_once["tasks"] / at_once["wall_s"])
    assert at_once["peak_rss_bytes"] >= at_once["peak_rss_before_bytes"] > 0
    # Group commit: many records per transaction, every execution, task and action in one.
    assert 0 < at_once["group_commits"] < at_once["records_written"]
    assert at_once["records_written"] >= quick.executions * (1 + 2 * CHAIN)
    assert "crash" not in result
    assert problems(result) == []
    text = _table(result)
    assert "start → first action" in text and "Mistral 23.0.0" in text
    assert f"{quick.executions} chains at once" in text


@pytest.mark.slow  # starts engine processes and kills them
@pytest.mark.parametrize("safe_rerun", [False, True], ids=["unsafe", "safe-rerun"])
async def test_after_kill_9_nothing_is_lost_and_nothing_done_runs_again(
    tmp_path: Path, safe_rerun: bool
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
    db = Database(url)
    await db.migrate()
    await db.close()
    receiver = Receiver()
    await receiver.start()
    try:
        c = await crash(url, receiver, tmp_path, 100, CHAIN, safe_rerun)
    finally:
        await receiver.close()
    assert (c["started"], c["lost"]) == (100, 0)
    assert c["success"] + c["error"] == 100
    # Killed midway: some tasks were done, not all.
    assert 0 < c["tasks_done_at_kill"] < 100 * CHAIN
    assert c["calls_at_kill"] >= 100 * CHAIN // 2
    assert c["done_at_kill_called_again"] == 0
    assert c["successful_tasks_never_called"] == 0
    assert c["unfinished_at_restart"] > 0
    assert 0 < c["restart_to_process_up_s"] < c["restart_to_all_finished_s"]
    if safe_rerun:
        # Everything finishes; only the calls in flight at the kill were made again,
        # each with the id it had.
        assert c["success"] == 100
        assert c["interrupted_tasks"] == 0
        assert c["action_ids_called_twice"] == c["tasks_called_twice"] > 0
    else:
        # A POST in flight is never made again: its task ends ERROR "interrupted".
        assert c["action_ids_called_twice"] == c["tasks_called_twice"] == 0
        assert c["successful_tasks_called_twice"] == 0
        assert c["interrupted_tasks"] == c["error"] > 0
    assert c["calls_total"] == len(receiver.calls)
    result = {"crash": [c]}
    assert problems({"states": {}, **result}) == []
