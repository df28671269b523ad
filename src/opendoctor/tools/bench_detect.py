"""`opendoctor bench detect`: host failure → detected → owners told, per probe setting,
beside the floor of a bare UDP echo, then a soak under loss that counts false alarms.

Per setting (interval and misses) a stack of its own (`running_stack`: the lab, the
service with that `monitor.interval` and `monitor.misses`, one consumer per project):

* kills: `--vms` VMs on compute1, one alarm each registered by its owner; each run
  powers off the host holding them (`fail_and_recover`), reads T00→T01 and T00→ the
  last owner's callback at the consumers, and powers it on again. Only compute1 and
  compute2 take VMs (the others are disabled), so every kill hits all of them.
* the floor: a bare asyncio prober and responder (`detect_echo.py`, no opendoctor
  code, processes of their own on loopback) at the same interval and misses.
* the soak: every lab host's heartbeat answers dropped at random (the lab's loss
  injection, on both paths), the first half of the hosts at 1 %, the other half at 5 %
  at the same time, for `--soak` seconds; the false `compute.host.down` and
  `compute.host.unreachable` reports are read from the events the service recorded.
  The service process's CPU time over the soak, per host and second, is the price of
  probing (the service has nothing else to do then).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE
from opendoctor.core.settings import MIN_PROBE_INTERVAL, PROBE_INTERVAL, PROBE_MISSES
from opendoctor.lab.spec import LabSpec
from opendoctor.monitor.hostprobe import MONITOR_NAME
from opendoctor.tools.bench import PROJECTS, summary
from opendoctor.tools.demo import fail_and_recover, restore
from opendoctor.tools.detect_floor import floor
from opendoctor.tools.stack import Stack, running_stack, wait_for

IP_PREFIX = "127.97"  # the lab's loopback block; the floor's echo answers at PREFIX.252.1
FLOOR_OCTET, FLOOR_PORT = 252, 4199
LOSSES = (0.01, 0.05)  # the soak's two levels, on the first and the second half of the hosts


@dataclass(frozen=True, slots=True)
class Setting:
    interval: float  # seconds
    misses: int

    @property
    def label(self) -> str:
        return f"{self.interval * 1000:g}ms:{self.misses}"

    @classmethod
    def parse(cls, text: str) -> Setting:
        """`10ms:3`, `0.02s:3` or `0.05:3` (seconds)."""
        interval, sep, misses = text.strip().partition(":")
        try:
            if interval.endswith("ms"):
                seconds = float(interval[:-2]) / 1000
            else:
                seconds = float(interval.removesuffix("s"))
            count = int(misses)
        except ValueError:
            raise ValueError(f"a setting is INTERVAL:MISSES, e.g. 10ms:3, not {text!r}") from None
        if not sep or count < 1:
            raise ValueError(f"a setting is INTERVAL:MISSES with MISSES >= 1, not {text!r}")
        if not seconds >= MIN_PROBE_INTERVAL:
            raise ValueError(
                f"{text}: the interval must be at least {MIN_PROBE_INTERVAL * 1000:g} ms"
            )
        return cls(round(seconds, 6), count)


DEFAULT_SETTINGS = [
    Setting(0.01, 3),
    Setting(0.01, 4),
    Setting(0.02, 3),
    Setting(0.05, 3),  # the old default
]
if Setting(PROBE_INTERVAL, PROBE_MISSES) not in DEFAULT_SETTINGS:
    DEFAULT_SETTINGS.insert(0, Setting(PROBE_INTERVAL, PROBE_MISSES))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float]) -> dict[str, float]:
    return {k: v * 1000 for k, v in summary(values).items()}


async def _populate(s: Stack, vms: int) -> None:
    for i in range(1, vms + 1):
        await s.lab.client.create_server(f"vm{i}", PROJECTS[i % 2], host="compute1")

    async def known() -> bool:
        return len(await s.get("/v1/servers")) >= vms

    await wait_for(f"the service to learn about {vms} servers", known, 60)


async def _kills(s: Stack, runs: int, tick: Callable[[], None]) -> dict[str, Any]:
    alarms = await s.register_alarms()
    detected: list[float] = []
    told: list[float] = []
    missed = 0
    for _ in range(runs):
        servers = await s.get("/v1/servers")
        host = max(("compute1", "compute2"), key=lambda h: sum(v["host"] == h for v in servers))
        for consumer in s.consumers.values():
            await s.http.delete(consumer.ready + "/received")
        story = await fail_and_recover(s, host)
        totals = story["totals"]
        detected.append(totals["detection"])
        missed += len(story["not_notified"])
        if totals["fault_to_last_notification"] is not None:
            told.append(totals["fault_to_last_notification"])
        await restore(s, host, story["fault_id"])
        await s.rearm(alarms)
        tick()
    return {"detected_ms": _ms(detected), "told_ms": _ms(told), "not_told": missed}


async def _false_reports(s: Stack, since: float, groups: dict[str, float]) -> dict[str, Any]:
    """Reports of our prober about soaked hosts since `since`, per loss level."""
    events = await s.get("/v1/events?limit=10000")
    counts = {str(loss): {HOST_DOWN: 0, HOST_UNREACHABLE: 0} for loss in LOSSES}
    for e in events:
        loss = groups.get(e.get("hostname", ""))
        if (
            loss is not None
            and e.get("monitor") == MONITOR_NAME
            and e.get("status") == "down"
            and e.get("type") in (HOST_DOWN, HOST_UNREACHABLE)
            and float(e.get("time", 0)) >= since
        ):
            counts[str(loss)][e["type"]] += 1
    return counts


async def _soak(
    s: Stack, seconds: float, hosts: int, advance: Callable[[float], None]
) -> dict[str, Any]:
    names = [s.lab.spec.host_name(i) for i in range(1, hosts + 1)]
    half = len(names) // 2
    groups = {n: LOSSES[0] if i < half else LOSSES[1] for i, n in enumerate(names)}
    (pid,) = s.service_pids()
    since = time.time()
    cpu = _cpu_seconds(pid)
    began = time.monotonic()
    fenced: list[str] = []
    await _power_on(s, groups, fenced)
    await _each(names, lambda n: s.lab.client.set_loss(n, groups[n]))
    while (left := seconds - (time.monotonic() - began)) > 0:
        step = min(1.0, left)
        await asyncio.sleep(step)
        advance(step)
        await _power_on(s, groups, fenced)
    elapsed = time.monotonic() - began
    cpu = _cpu_seconds(pid) - cpu
    alive = [h["name"] for h in await s.lab.client.host_details() if h["alive"]]
    await _each(alive, lambda n: s.lab.client.set_loss(n, 0.0))
    reports = await _false_reports(s, since, groups)
    return {
        "seconds": elapsed,
        "hosts": {str(loss): sum(v == loss for v in groups.values()) for loss in LOSSES},
        "false_reports": reports,
        "fenced_and_restored": fenced,
        "service_cpu_per_host": cpu / elapsed / len(names),
        "service_cpu_share": cpu / elapsed,
    }


async def _power_on(s: Stack, groups: dict[str, float], fenced: list[str]) -> None:
    """A false "down" has the host fenced (powered off): power it on again, lossy as
    before, so that the soak goes on on every host."""
    for h in await s.lab.client.host_details():
        if not h["alive"] and h["name"] in groups:
            fenced.append(h["name"])
            await s.lab.client.restore_host(h["name"])
            await s.lab.client.set_loss(h["name"], groups[h["name"]])


async def _each(names: list[str], call: Callable[[str], Awaitable[Any]]) -> None:
    await asyncio.gather(*(call(n) for n in names))


async def one_setting(
    setting: Setting,
    runs: int,
    vms: int,
    hosts: int,
    soak: float,
    workdir: Path,
    progress: Progress,
    ip_prefix: str = IP_PREFIX,
) -> dict[str, Any]:
    label = setting.label
    spec = LabSpec(
        hosts=hosts, vms=0, projects=PROJECTS, vm_mode="inline", ip_prefix=ip_prefix,
        heartbeat=False,
    )  # fmt: skip
    env = {
        "OPENDOCTOR_MONITOR__INTERVAL": str(setting.interval),
        "OPENDOCTOR_MONITOR__MISSES": str(setting.misses),
        "OPENDOCTOR_LOG_LEVEL": "WARNING",
    }
    kills = progress.add_task(f"{label} host kills", total=runs)
    soaking = progress.add_task(f"{label} soak", total=soak)
    async with running_stack(spec, workdir / label.replace(":", "-"), env) as s:
        for i in range(3, hosts + 1):
            await s.lab.client.set_enabled(spec.host_name(i), False)
        await _populate(s, vms)
        measured = await _kills(s, runs, lambda: progress.advance(kills))
        soaked = await _soak(s, soak, hosts, lambda step: progress.advance(soaking, step))
    echo = f"{ip_prefix}.{FLOOR_OCTET}.1"
    bare = await floor(setting.interval, setting.misses, runs, echo, FLOOR_PORT)
    floor_detected = _ms(bare["detected"])
    ratio = (
        measured["detected_ms"]["p50"] / floor_detected["p50"]
        if measured["detected_ms"] and floor_detected
        else None
    )
    return {
        "setting": label,
        "interval": setting.interval,
        "misses": setting.misses,
        "runs": runs,
        "vms": vms,
        **measured,
        "floor": {
            "detected_ms": floor_detected,
            "rtt_ms": _ms(bare["rtt"]),
            "cpu_per_host": bare["cpu"] / bare["wall"] if bare["wall"] else None,
        },
        "detected_over_floor_p50": ratio,
        "soak": soaked,
    }


async def detect(
    settings: list[Setting],
    runs: int,
    vms: int,
    hosts: int,
    soak: float,
    console: Console,
    ip_prefix: str = IP_PREFIX,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="opendoctor-bench-detect-") as tmp,
        Progress(console=console) as progress,
    ):
        for setting in settings:
            one = one_setting(setting, runs, vms, hosts, soak, Path(tmp), progress, ip_prefix)
            results.append(await one)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": list(load_before),
            "load_after": list(os.getloadavg()),
        },
        "soak_mode": (
            f"both loss levels at once, each on half of the {hosts} hosts of one lab "
            "(both paths of each host lossy), one soak per setting"
        ),
        "default": Setting(PROBE_INTERVAL, PROBE_MISSES).label,
        "settings": results,
    }
