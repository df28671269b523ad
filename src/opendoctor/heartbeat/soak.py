"""Measurements of the guest heartbeat with real guest-agent processes.

`soak` runs healthy agents for a while and counts false alarms; `detection` injects
faults (hang, death, failing health command, restart) and times the reports. Both
start the agents as `python -m opendoctor.heartbeat.cli` over Unix sockets in a temporary
directory, as the lab's VMs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from opendoctor.heartbeat.hostside import MISSED, UNHEALTHY, HeartbeatSettings, HeartbeatSupervisor

START_TIMEOUT = 30.0
REPORT_TIMEOUT = 10.0


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds (nearest rank)."""
    values = sorted(samples)
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

    def rank(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": round(values[-1] * 1000, 2)}


class _Reports:
    """Collects the supervisor's reports and wakes whoever waits for a matching one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[float]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        self.events.append(event)
        for match, fut in self._waiters:
            if not fut.done() and match(event):
                fut.set_result(now)

    async def wait(self, instance_id: str, kind: str, status: str) -> float:
        """Monotonic time at which the matching report was made."""

        def match(e: dict[str, Any]) -> bool:
            d = e["details"]
            return bool(
                e["type"] == kind and (d["instance_id"], d["status"]) == (instance_id, status)
            )

        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (match, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, REPORT_TIMEOUT)
        finally:
            self._waiters.remove(entry)


class _Lab:
    """A supervisor plus agent processes, one Unix socket per VM."""

    def __init__(self, workdir: Path, settings: HeartbeatSettings, **kw: Any) -> None:
        self.dir = workdir
        self.settings = settings
        self.reports = _Reports()
        self.sup = HeartbeatSupervisor("bench-host", self.reports, settings, **kw)
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    def sock(self, vm: str) -> str:
        return str(self.dir / f"{vm}.sock")

    async def spawn(self, vm: str, health_cmd: str | None = None) -> asyncio.subprocess.Process:
        args = [
            *("-m", "opendoctor.heartbeat.cli", "--channel", self.sock(vm), "--instance-id", vm),
            *("--interval-ms", str(round(self.settings.interval * 1000))),
            *("--timeout-ms", str(round(self.settings.response_timeout * 1000))),
            *("--ready-file", str(self.dir / f"{vm}.ready"), "--log-level", "WARNING"),
        ]
        if health_cmd:
            args += ["--health-cmd", health_cmd]
        with (self.dir / f"{vm}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.procs[vm] = proc
        return proc

    async def until(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} (logs in {self.dir})")
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                await proc.wait()
        await self.sup.close()


async def soak(
    vms: int,
    seconds: float,
    settings: HeartbeatSettings | None = None,
    *,
    health_cmd: str | None = None,
) -> dict[str, Any]:
    """Run `vms` healthy agents for `seconds`; every report in that time is a false alarm."""
    settings = settings or HeartbeatSettings()
    rtts: list[float] = []
    measuring = False

    def observe(_: str, rtt: float) -> None:
        if measuring:
            rtts.append(rtt)

    with tempfile.TemporaryDirectory(prefix="odhb-") as tmp:
        lab = _Lab(Path(tmp), settings, observe=observe)
        names = [f"vm-{i}" for i in range(vms)]
        try:
            for name in names:
                await lab.sup.add_vm(name, name, lab.sock(name))
            await asyncio.gather(*(lab.spawn(name, health_cmd) for name in names))
            await lab.until(lambda: all(lab.sup.state(n) == "ok" for n in names), "registration")
            before = dict(lab.sup.counters)
            lab.reports.events.clear()
            measuring = True
            await asyncio.sleep(seconds)  # the measurement window itself
            measuring = False
            counters = {k: v - before.get(k, 0) for k, v in lab.sup.counters.items()}
            reports = list(lab.reports.events)
        finally:
            await lab.close()
    return {
        "vms": vms,
        "seconds": seconds,
        "false_alarms": len(reports),
        "reports": reports,
        "challenges": counters.get("challenges", 0),
        "responses": counters.get("responses", 0),
        "counters": counters,
        "latency": percentiles(rtts),
    }


async def _phase(settings: HeartbeatSettings) -> None:
    # Faults strike at random points of the challenge cycle, not just after a response.
    await asyncio.sleep(random.uniform(0, settings.interval))


async def _hang(lab: _Lab, vm: str, runs: int) -> list[float]:
    proc = await lab.spawn(vm)
    await lab.until(lambda: lab.sup.state(vm) == "ok", f"{vm} to register")
    took = []
    for _ in range(runs):
        await _phase(lab.settings)
        proc.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        took.append(await lab.reports.wait(vm, MISSED, "down") - start)
        proc.send_signal(signal.SIGCONT)
        await lab.reports.wait(vm, MISSED, "up")
    return took


async def _dead(lab: _Lab, vm: str, runs: int) -> list[float]:
    proc = await lab.spawn(vm)
    await lab.until(lambda: lab.sup.state(vm) == "ok", f"{vm} to register")
    took = []
    for _ in range(runs):
        await _phase(lab.settings)
        proc.kill()
        start = time.monotonic()
        took.append(await lab.reports.wait(vm, MISSED, "down") - start)
        await proc.wait()
        # Waiting for "up" (not just state "ok") proves the successor has registered.
        up = asyncio.ensure_future(lab.reports.wait(vm, MISSED, "up"))
        proc = await lab.spawn(vm)
        await up
    return took


async def _unhealthy(lab: _Lab, vm: str, runs: int) -> list[float]:
    flag = lab.dir / f"{vm}.fail"
    await lab.spawn(vm, f"test ! -e {flag}")
    await lab.until(lambda: lab.sup.state(vm) == "ok", f"{vm} to register")
    took = []
    for _ in range(runs):
        await _phase(lab.settings)
        flag.touch()
        start = time.monotonic()
        took.append(await lab.reports.wait(vm, UNHEALTHY, "down") - start)
        flag.unlink()
        await lab.reports.wait(vm, UNHEALTHY, "up")
    return took


async def _restart(lab: _Lab, vm: str, runs: int) -> tuple[list[float], int]:
    """SIGKILL then start a new agent at once: a crash-and-restart, which is no fault."""
    ready = lab.dir / f"{vm}.ready"
    took = []
    proc = await lab.spawn(vm)
    await lab.until(lambda: lab.sup.state(vm) == "ok", f"{vm} to register")
    before = len([e for e in lab.reports.events if e["details"]["instance_id"] == vm])
    for _ in range(runs):
        await _phase(lab.settings)
        ready.unlink(missing_ok=True)
        proc.kill()
        start = time.monotonic()
        await proc.wait()
        proc = await lab.spawn(vm)
        await lab.until(ready.exists, f"{vm} to register again")
        took.append(time.monotonic() - start)
        await lab.until(lambda: lab.sup.state(vm) == "ok", f"{vm} to recover")
    alarms = len([e for e in lab.reports.events if e["details"]["instance_id"] == vm]) - before
    return took, alarms


async def detection(runs: int, settings: HeartbeatSettings | None = None) -> dict[str, Any]:
    """Fault-to-report times over `runs` injections of each fault, with real processes.

    missed_hung: SIGSTOP of the agent to the `missed` report; missed_dead: SIGKILL to
    `missed`; unhealthy: the health command starting to fail to `unhealthy`; restart:
    SIGKILL and immediate restart to re-registration, with the false alarms it caused.
    """
    settings = settings or HeartbeatSettings()
    with tempfile.TemporaryDirectory(prefix="odhb-") as tmp:
        lab = _Lab(Path(tmp), settings)
        try:
            for vm in ("hung", "dead", "sick", "restart"):
                await lab.sup.add_vm(vm, vm, lab.sock(vm))
            # A TaskGroup: if one kind fails, the others stop before the lab is torn down.
            async with asyncio.TaskGroup() as tg:
                hung = tg.create_task(_hang(lab, "hung", runs))
                dead = tg.create_task(_dead(lab, "dead", runs))
                sick = tg.create_task(_unhealthy(lab, "sick", runs))
                restart = tg.create_task(_restart(lab, "restart", runs))
        finally:
            await lab.close()
    restarts, alarms = restart.result()
    return {
        "runs": runs,
        "settings": dataclasses.asdict(settings),
        "missed_hung": percentiles(hung.result()),
        "missed_dead": percentiles(dead.result()),
        "unhealthy": percentiles(sick.result()),
        "restart": {**percentiles(restarts), "false_alarms": alarms},
        "cpus": os.cpu_count(),
    }
