"""`opendoctor bench switchover`: UC2 over and over, with percentiles.

Each run kills the process of the pair's active server while clients send requests to
the virtual IP; the owner switches the load balancer to the standby. The killed server
is then restarted as the new standby, its fault clears, its alarm is re-armed, and the
next run kills the other one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from opendoctor.tools.bench import summary
from opendoctor.tools.demo_uc2 import PROJECT, UC2_SPEC, Traffic, kill_and_switch, setup_pair
from opendoctor.tools.stack import Stack, owner, running_stack, wait_for


async def _rearm(s: Stack, server_id: str) -> None:
    """Restart a killed server as the standby and wait until opendoctor sees it healthy."""
    lab = s.lab.client
    await lab.start(server_id)
    await lab.set_role(server_id, "standby")

    async def cleared() -> bool:
        active = await s.get("/v1/faults?status=active")
        return not any(f.get("instance_id") == server_id for f in active)

    await wait_for("the restarted server's fault to clear", cleared, 15)
    alarms = (await s.http.get(s.api + "/v2/alarms", headers=owner(PROJECT))).json()
    fired = [a for a in alarms if server_id in str(a["event_rule"]) and a["state"] != "ok"]
    await s.rearm(fired)


async def switchover(runs: int, console: Console) -> dict[str, Any]:
    detection: list[float] = []
    notified: list[float] = []
    switched: list[float] = []
    failed: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="opendoctor-bench-uc2-") as tmp,
        Progress(console=console) as progress,
    ):
        task = progress.add_task("switch-overs", total=runs)
        # Each run repairs the killed server itself (as the new standby): VM recovery,
        # restarting it too, would race that and load the machine during the next run.
        no_repair = {"OPENDOCTOR_RECOVERY__VM__ENABLED": "false"}
        async with running_stack(UC2_SPEC, Path(tmp), service_env=no_repair) as s:
            pair = await setup_pair(s)
            traffic = Traffic(pair["vip"])
            traffic.start()
            try:
                for _ in range(runs):
                    story = await kill_and_switch(s, pair, traffic)
                    totals = story["totals"]
                    detection.append(totals["detection"])
                    notified.append(totals["fault_to_notification"])
                    switched.append(totals["fault_to_switchover"])
                    failed.append(story["requests"]["failed"])
                    await _rearm(s, pair["active"].id)
                    pair["active"], pair["standby"] = pair["standby"], pair["active"]
                    progress.advance(task)
            finally:
                await traffic.stop()
    return {
        "runs": runs,
        "request_period": traffic.period,
        "detection": summary(detection),
        "fault_to_notification": summary(notified),
        "fault_to_switchover": summary(switched),
        "failed_requests": summary(failed),
    }


def print_switchover(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"UC2: active VM killed → standby serving ({result['runs']} runs)")
    for col in ("measure", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    for key, label, scale, unit in (
        ("detection", "detection (T00→T01)", 1000, "ms"),
        ("fault_to_notification", "owner notified (T00→T09)", 1000, "ms"),
        ("fault_to_switchover", "switched over (T00→T10)", 1000, "ms"),
        ("failed_requests", "client requests failed", 1, ""),
    ):
        stats = result[key]
        table.add_row(
            label, *(f"{stats[q] * scale:.1f} {unit}".strip() for q in ("p50", "p90", "p99", "max"))
        )
    console.print(table)
    console.print(f"clients sent one request every {result['request_period'] * 1000:.0f} ms")
