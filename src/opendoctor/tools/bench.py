"""`opendoctor bench notify`: host failure → owners notified, measured on real processes.

For each size N: a lab of two hosts with N VMs on one of them (VMs served inline by
their host, so a thousand of them fit on one machine), the service as its own process,
two consumer processes (one per project) and one alarm per VM. Each run kills the host
that holds the VMs, waits until every owner has heard and every VM serves again on the
other host, then restores the killed host and re-arms the alarms. The VMs ping-pong
between the two hosts, run after run.

Beside each size it measures the fan-out floor (`tools.floor`): the callbacks the
service sent in the first run, sent again after each run by a bare aiohttp client to
the same consumers. "Last owner told" divided by the floor's is what the service adds
to the sending itself (detection, matching, bookkeeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from opendoctor.lab.spec import LabSpec
from opendoctor.tools import floor
from opendoctor.tools.demo import Vim, fail_and_recover, restore
from opendoctor.tools.stack import Stack, running_stack, wait_for

PROJECTS = ["project-a", "project-b"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


async def _populate(s: Stack, n: int) -> None:
    limit = asyncio.Semaphore(32)

    async def make(i: int) -> None:
        async with limit:
            await s.lab.client.create_server(f"vm{i}", PROJECTS[i % 2], host="compute1")

    await asyncio.gather(*(make(i) for i in range(1, n + 1)))

    async def known() -> bool:
        return len(await s.get("/v1/servers")) >= n

    await wait_for(f"the service to learn about {n} servers", known, 60)


Between = Callable[[], Awaitable[None]]  # what must hold again before the next run


async def _nothing() -> None:
    return None


@contextlib.asynccontextmanager
async def _stack(
    vim: Vim, n: int, workdir: Path, progress: Progress
) -> AsyncIterator[tuple[Stack, Between]]:
    """The stack for `n` VMs on one host: the lab's own VIM, or real Nova."""
    env = {"OPENDOCTOR_RECOVERY__CONCURRENCY": "32", "OPENDOCTOR_LOG_LEVEL": "WARNING"}
    if vim == "openstack":
        from opendoctor.tools.openstack_stack import openstack_stack

        projects = [f"bench-{p}" for p in PROJECTS]

        def say(text: str) -> None:
            progress.console.print(f"[dim]{text}[/dim]")

        async with openstack_stack(workdir, projects, n, say, on="compute1", service_env=env) as (
            s,
            cloud,
        ):
            # The next failure's evacuation needs every other compute host back in Nova.
            yield s, cloud.computes_up
        return
    async with lab_stack(n, workdir, env) as s:
        yield s, _nothing


@contextlib.asynccontextmanager
async def lab_stack(
    n: int, workdir: Path, env: dict[str, str], ip_prefix: str = "127.61"
) -> AsyncIterator[Stack]:
    """The stack on a lab of two hosts with `n` VMs on compute1, served inline by their
    host (a thousand of them fit on one machine); `ip_prefix` keeps benchmarks apart."""
    # Inline VMs have no guest agents to measure here: heartbeats off, as a thousand of
    # them would cost the machine a core that this benchmark measures something else with.
    spec = LabSpec(
        hosts=2, vms=0, projects=PROJECTS, vm_mode="inline", ip_prefix=ip_prefix, heartbeat=False
    )
    async with running_stack(spec, workdir, env) as s:
        await _populate(s, n)
        yield s


async def sent_callbacks(s: Stack) -> list[floor.Callback]:
    """What the service sent in the run just over, as the consumers received it."""
    callbacks: list[floor.Callback] = []
    for consumer in s.consumers.values():
        arrivals = (await s.http.get(consumer.ready + "/arrivals")).json()
        callbacks += floor.from_arrivals(consumer.ready, arrivals)
    return callbacks


async def one_size(
    n: int,
    runs: int,
    workdir: Path,
    progress: Progress,
    vim: Vim = "lab",
    with_floor: bool = True,
    connections: int = floor.CONNECTIONS,
) -> dict[str, Any]:
    task = progress.add_task(f"{n} VMs", total=runs)
    per_notice: list[float] = []
    last: list[float] = []
    detection: list[float] = []
    fault_to_last: list[float] = []
    from_t02: list[float] = []
    recovered: list[float] = []
    missed = 0
    bare = floor.FloorResult()
    callbacks: list[floor.Callback] = []
    async with (
        _stack(vim, n, workdir / f"n{n}", progress) as (s, between),
        floor.BareClient(connections) as client,
    ):
        alarms = await s.register_alarms()
        consumers = [c.ready for c in s.consumers.values()]
        for _ in range(runs):
            await between()
            servers = await s.get("/v1/servers")
            # The host with the most VMs (Nova's evacuations may spread them).
            host = Counter(v["host"] for v in servers).most_common(1)[0][0]
            for consumer in s.consumers.values():
                await s.http.delete(consumer.ready + "/received")
            story = await fail_and_recover(s, host, vim)
            totals = story["totals"]
            missed += len(story["not_notified"])
            per_notice.extend(x["since_t01"] for x in story["notifications"])
            if totals["detection_to_last_notification"] is not None:
                last.append(totals["detection_to_last_notification"])
                fault_to_last.append(totals["fault_to_last_notification"])
                if "T02" in story["trace"]:
                    # From the affected servers known (the notifier's start) on: what
                    # compares with the floor's first send.
                    t02 = story["trace"]["T02"] - story["trace"]["T01"]
                    from_t02.append(totals["detection_to_last_notification"] - t02)
            detection.append(totals["detection"])
            if totals["fault_to_recovered"] is not None:
                recovered.append(totals["fault_to_recovered"])
            if with_floor:
                # Interleaved with the service's runs: both see the same noise.
                callbacks = callbacks or await sent_callbacks(s)
                bare.runs.append(await client.fan_out(consumers, callbacks))
            await restore(s, host, story["fault_id"])
            await s.rearm(alarms)
            progress.advance(task)
    return {
        "vim": vim,
        "vms": n,
        "runs": runs,
        "notifications": len(per_notice),
        "not_notified": missed,
        "detection_to_notification": summary(per_notice),
        "detection_to_last_notification": summary(last),
        "fault_to_last_notification": summary(fault_to_last),
        "affected_to_last_notification": summary(from_t02),
        "detection": summary(detection),
        "fault_to_recovered": summary(recovered),
        "per_run_last_notification": last,
        "floor": bare.summary() if bare.runs else None,
    }


async def notify(
    sizes: list[int],
    runs: int,
    console: Console,
    vim: Vim = "lab",
    with_floor: bool = True,
    connections: int = floor.CONNECTIONS,
) -> list[dict[str, Any]]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="opendoctor-bench-") as tmp,
        Progress(console=console) as progress,
    ):
        for n in sizes:
            results.append(
                await one_size(n, runs, Path(tmp), progress, vim, with_floor, connections)
            )
    return results


def _ms(stats: dict[str, float], key: str) -> str:
    return f"{stats[key] * 1000:.1f}" if key in stats else "—"


def print_notify(console: Console, results: list[dict[str, Any]]) -> None:
    table = Table(title="host failure → owners notified (milliseconds)")
    for col in (
        "VIM",
        "VMs",
        "runs",
        "notified",
        "T01→T09 p50",
        "p90",
        "p99",
        "max",
        "last owner p50",
        "p99",
        "T00→T01 p50",
        "T00→T09 last p99",
        "T00→T11 p50",
    ):
        table.add_column(col, justify="right")
    for r in results:
        d, l_, det = (
            r["detection_to_notification"],
            r["detection_to_last_notification"],
            r["detection"],
        )
        table.add_row(
            r.get("vim", "lab"),
            str(r["vms"]),
            str(r["runs"]),
            f"{r['notifications']}"
            + (f" ({r['not_notified']} missed)" if r["not_notified"] else ""),
            _ms(d, "p50"),
            _ms(d, "p90"),
            _ms(d, "p99"),
            _ms(d, "max"),
            _ms(l_, "p50"),
            _ms(l_, "p99"),
            _ms(det, "p50"),
            _ms(r["fault_to_last_notification"], "p99"),
            _ms(r["fault_to_recovered"], "p50"),
        )
    console.print(table)
    print_floor(console, results)


def print_floor(console: Console, results: list[dict[str, Any]]) -> None:
    """Last owner told, ours beside the bare client's (the floor), and their ratio."""
    table = Table(title="last owner told: ours (T01→T09) beside the fan-out floor (ms)")
    for col in (
        "VIM",
        "VMs",
        "ours p50",
        "floor p50",
        "ours/floor",
        "ours p99",
        "floor p99",
        "ours/floor",
        "ours from T02 p50",
        "ours/floor",
        "floor per callback p50",
        "p99",
        "floor missed",
    ):
        table.add_column(col, justify="right")
    for r in results:
        bare = r.get("floor")
        if not bare:
            continue
        ours, fl = r["detection_to_last_notification"], bare["last_told"]
        table.add_row(
            r.get("vim", "lab"),
            str(r["vms"]),
            _ms(ours, "p50"),
            _ms(fl, "p50"),
            floor.fmt_ratio(ours.get("p50"), fl["p50"]),
            _ms(ours, "p99"),
            _ms(fl, "p99"),
            floor.fmt_ratio(ours.get("p99"), fl["p99"]),
            _ms(r.get("affected_to_last_notification", {}), "p50"),
            floor.fmt_ratio(r.get("affected_to_last_notification", {}).get("p50"), fl["p50"]),
            _ms(bare["per_callback"], "p50"),
            _ms(bare["per_callback"], "p99"),
            str(bare["missed"]),
        )
    console.print(table)
