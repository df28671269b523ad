"""`opendoctor bench recovery`: host failure → fenced → evacuated → serving, measured.

For each size N: the lab of `bench notify` (two hosts, N VMs served inline by the host
that holds them, the service as its own process), each host's Redfish BMC its fence
device. Each run powers off the host holding the VMs, polls the fault through the API
until every server serves again elsewhere (T11) or every recovery item has ended, reads
the fault's timeline, then restores the host. The VMs ping-pong between the hosts.

Beside the figures stands Masakari with its defaults: its host-failure flow disables
the compute service, then sleeps `wait_period_after_service_update` (180 s) before it
looks for servers to evacuate, so its first evacuation comes at least 180 s after it
heard of the failure, and its last server serves later still.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from opendoctor.tools.bench import lab_stack, summary
from opendoctor.tools.demo import answers, caught_up, restore
from opendoctor.tools.stack import Stack, StackError, wait_for

DEFAULT_SIZES = [10, 100, 1000]
DEFAULT_CONCURRENCY = 32
# Masakari's `[DEFAULT] wait_period_after_service_update` (masakari/conf/engine.py),
# slept by its host-failure flow between disabling the compute service and evacuating.
MASAKARI_WAIT = 180.0
IP_PREFIX = "127.84"  # a lab of its own, apart from bench notify's (127.61)

# What is measured, from the fault's timeline: (checkpoint, label).
FIGURES: dict[str, tuple[str, str]] = {
    "fenced": ("T05", "detection → fenced (T01→T05)"),
    "first_evacuation": ("T06", "detection → first evacuation call (T01→T06)"),
    "last_serving": ("T11", "detection → last server serving (T01→T11)"),
}
# Masakari's lower bound for each figure (None: not part of its host-failure flow, where
# fencing is left to the cluster manager that runs its host monitor).
MASAKARI: dict[str, float | None] = {
    "fenced": None,
    "first_evacuation": MASAKARI_WAIT,
    "last_serving": MASAKARI_WAIT,
}


def _recovery_timeout(n: int) -> float:
    # Generous: a run that needs it is broken, and the error then says what is pending.
    return 30.0 + 0.1 * n


def _poll_interval(n: int) -> float:
    # Each poll makes the service serialise every recovery item: with a thousand of them
    # a fast poll would take CPU from the recovery it measures. The figures are the
    # service's own timestamps, so a slower poll does not change them.
    return min(1.0, 0.05 + n / 2000)


async def one_run(s: Stack, n: int) -> dict[str, Any]:
    """Power off the host holding the servers, wait until its recovery is over, restore
    it; the run's figures (seconds since detection) and the servers that did not
    recover."""
    servers = await s.get("/v1/servers")
    host = Counter(v["host"] for v in servers).most_common(1)[0][0]
    victims = {v["id"]: v["name"] for v in servers if v["host"] == host}
    await s.lab.client.fail_host(host)

    async def detected() -> dict[str, Any] | None:
        faults = await s.get("/v1/faults?status=active")
        return next((f for f in faults if f["hostname"] == host), None)

    fault = await wait_for(f"{host}'s failure to be detected", detected, 10)
    path = f"/v1/faults/{fault['id']}?notifications=false"

    async def over() -> dict[str, Any] | None:
        f: dict[str, Any] = await s.get(path)
        ended = bool(f["recovery"]) and all(i["result"] != "pending" for i in f["recovery"])
        # T11 is marked a moment after the last item ends, and only if all went well:
        # without it, only a recovery with a failure is over.
        failed = ended and any(i["result"] != "ok" for i in f["recovery"])
        return f if "T11" in f["trace"] or failed else None

    try:
        fault = await wait_for(
            f"the recovery of {host}'s {len(victims)} servers",
            over,
            _recovery_timeout(n),
            _poll_interval(n),
        )
    except StackError as exc:
        f = await s.get(path)
        pending = sum(i["result"] == "pending" for i in f["recovery"])
        raise StackError(
            f"{exc} ({len(f['recovery'])} taken on, {pending} pending; "
            f"checkpoints {sorted(f['trace'])})"
        ) from None
    since = {row["checkpoint"]: row["since_detection"] for row in fault["timeline"]}
    await caught_up(s, fault["recovery"])
    # The service's word (T11) checked from outside: each server's application answers
    # again, from another host.
    serving = await answers(s, list(victims))
    failed = _failed(victims, host, fault["recovery"], serving)
    await restore(s, host, fault["id"])
    run: dict[str, Any] = {"host": host, "fault_id": fault["id"], "failed": failed}
    run |= {name: since.get(cp) for name, (cp, _) in FIGURES.items()}
    run["timeline"] = since  # every checkpoint: where the time went before the fence
    return run


def _failed(
    victims: dict[str, str],
    host: str,
    items: list[dict[str, Any]],
    serving: dict[str, str | None],
) -> list[dict[str, Any]]:
    """Each server of the failed host that does not serve elsewhere now, and why."""
    by_id = {i["server_id"]: i for i in items}
    out = []
    for sid, name in victims.items():
        item = by_id.get(sid)
        if item is None:
            why = "never taken on by recovery"
        elif item["result"] != "ok":
            why = f"{item['result']}: {item['error'] or 'no reason given'}"
        elif item["to_host"] in (None, host):
            why = f"reported ok but placed on {item['to_host']}"
        elif serving.get(name) is None:
            why = f"reported ok on {item['to_host']} but does not answer"
        else:
            continue
        out.append({"id": sid, "name": name, "why": why})
    return out


async def one_size(
    n: int, runs: int, concurrency: int, workdir: Path, progress: Progress
) -> dict[str, Any]:
    task = progress.add_task(f"{n} servers", total=runs)
    env = {
        "OPENDOCTOR_RECOVERY__CONCURRENCY": str(concurrency),
        "OPENDOCTOR_LOG_LEVEL": "WARNING",
    }
    per_run = []
    async with lab_stack(n, workdir / f"n{n}", env, IP_PREFIX) as s:
        for _ in range(runs):
            per_run.append(await one_run(s, n))
            progress.advance(task)
    figures = {name: summary([r[name] for r in per_run if r[name] is not None]) for name in FIGURES}
    failed = [dict(f, run=i) for i, r in enumerate(per_run, 1) for f in r["failed"]]
    return {
        "vms": n,
        "runs": runs,
        "concurrency": concurrency,
        **figures,
        "failed": len(failed),
        "failed_servers": failed,
        # Every run must have fenced the host before anything moved: T05 is the proof.
        "unfenced_runs": sum(r["fenced"] is None for r in per_run),
        "masakari": _masakari(figures),
        "per_run": per_run,
    }


def _masakari(figures: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Masakari's lower bounds, and how many times ours (worst run) fits in them."""
    ratios = {
        name: bound / figures[name]["max"]
        for name, bound in MASAKARI.items()
        if bound is not None and figures[name].get("max")
    }
    return {
        "wait_period_after_service_update": MASAKARI_WAIT,
        "at_least": {name: bound for name, bound in MASAKARI.items() if bound is not None},
        "ratio_to_our_max": ratios,
    }


async def recovery(
    sizes: list[int], runs: int, console: Console, concurrency: int = DEFAULT_CONCURRENCY
) -> list[dict[str, Any]]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="opendoctor-bench-recovery-") as tmp,
        Progress(console=console) as progress,
    ):
        for n in sizes:
            results.append(await one_size(n, runs, concurrency, Path(tmp), progress))
    return results


def problems(results: list[dict[str, Any]]) -> list[str]:
    """What makes the run a failure: servers not recovered, hosts not fenced."""
    out = []
    for r in results:
        for f in r["failed_servers"]:
            out.append(f"{r['vms']} servers, run {f['run']}: {f['name']} {f['why']}")
        if r["unfenced_runs"]:
            out.append(f"{r['vms']} servers: {r['unfenced_runs']} run(s) without T05 (fenced)")
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def print_recovery(console: Console, results: list[dict[str, Any]]) -> None:
    for r in results:
        table = Table(
            title=f"host failure → servers serving elsewhere: {r['vms']} servers, "
            f"{r['runs']} runs, recovery concurrency {r['concurrency']}",
            caption=f"servers that failed to recover: {r['failed']}; runs without a "
            f"fence (T05): {r['unfenced_runs']}. Masakari: its host-failure flow sleeps "
            f"wait_period_after_service_update = {MASAKARI_WAIT:.0f} s after disabling "
            "the compute service, before it evacuates.",
        )
        table.add_column("figure")
        for col in ("p50", "p90", "max", "Masakari (defaults)", "Masakari ÷ ours (max)"):
            table.add_column(col, justify="right")
        ratios = r["masakari"]["ratio_to_our_max"]
        for name, (_, label) in FIGURES.items():
            stats = r[name]
            bound = MASAKARI[name]
            table.add_row(
                label,
                *(_seconds(stats.get(k)) for k in ("p50", "p90", "max")),
                "— (not in its flow)" if bound is None else f"≥ {bound:.0f} s",
                f"≥ {ratios[name]:,.0f} x" if name in ratios else "—",
            )
        console.print(table)
        if r["failed_servers"]:
            failed = Table(title=f"servers that failed to recover ({r['vms']} servers)")
            for col in ("run", "server", "why"):
                failed.add_column(col)
            for f in r["failed_servers"]:
                failed.add_row(str(f["run"]), f["name"], f["why"])
            console.print(failed)
