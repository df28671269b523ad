"""`opendoctor bench storm`: a storm of host faults, embedded mode beside scaled-out mode.

For each mode, a real stack (`running_stack`: the lab, the service as its own process,
one consumer process per project) with a lab of H hosts x V VMs (VMs served inline by
their hosts) and one more host with 50 VMs for the single-fault part, one alarm per VM
registered by its owner. The service's own monitor and recovery are off: the storm
measures detection → notification, nothing else.

* The storm: `PUT /events` of one `compute.host.down` per host (Doctor format), all
  at once, each event's `time` (its T01) the moment it was sent. Figures: events
  accepted per second (H over first send → last 202), notifications delivered per
  second (over first send → last arrival at a consumer), T01→T09 of every
  notification (arrival at the consumer minus its event's send time) and how many
  never arrived.
* Then, once the storm is handled (every stormed host's servers set to error, the
  storm's faults still active), the 50-VM host fails `runs` times: down, every owner
  told, up (the fault clears), alarms re-armed.

Modes (`MODES`): `embedded` is the default service (SQLite, in-process bus);
`scaled` is the same single process on PostgreSQL (a database the bench creates and
drops) with its events on RabbitMQ (a bus prefix of its own, whose exchanges and queues
the bench deletes); `split` and `split-2` run every role as its own processes, one or
two replicas each (`opendoctor.app.cluster`), on the same servers. Owners are told over
HTTP callbacks, or over AMQP with `amqp_actions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.lab.spec import LabSpec
from opendoctor.tools import floor
from opendoctor.tools.bench import sent_callbacks, summary
from opendoctor.tools.stack import Stack, StackError, running_stack, wait_for
from opendoctor.tools.storm_backends import Deployment, check_backends, deploy
from opendoctor.tools.storm_cpu import CpuMeter
from opendoctor.tools.storm_intake import Intake
from opendoctor.tools.storm_intake import IntakeOptions as IntakeOptions
from opendoctor.tools.storm_modes import DEFAULT_AMQP as DEFAULT_AMQP
from opendoctor.tools.storm_modes import DEFAULT_PG as DEFAULT_PG
from opendoctor.tools.storm_modes import MODES as MODES
from opendoctor.tools.storm_modes import PROJECTS, RESEND_AFTER, RESEND_FOR, Mode, Unavailable
from opendoctor.tools.storm_modes import SINGLE_VMS as SINGLE_VMS
from opendoctor.tools.storm_modes import Options as Options
from opendoctor.tools.storm_modes import check_size as check_size
from opendoctor.tools.storm_rebalance import kill_restart
from opendoctor.tools.storm_report import missing_total as missing_total
from opendoctor.tools.storm_report import print_storm as print_storm
from opendoctor.tools.storm_report import ratios

# Fan-outs of the floor per storm; its median is the figure.
FLOOR_RUNS = 3


def host_event(hostname: str, status: str, at: float, event_id: str) -> dict[str, Any]:
    """A Doctor fault event about a host, detected (T01) at `at`."""
    return {
        "time": at,
        "type": "compute.host.down",
        "details": {
            "hostname": hostname,
            "status": status,
            "monitor": "bench-storm",
            "monitor_event_id": event_id,
        },
    }


@dataclass(slots=True)
class Lab:
    """Who is where: the stormed hosts, the single-fault host, each server's host."""

    storm_hosts: list[str]
    single_host: str
    host_of: dict[str, str] = field(default_factory=dict)  # server id -> host

    def on(self, host: str) -> set[str]:
        return {sid for sid, h in self.host_of.items() if h == host}


class ModeRun:
    """One mode: its stack up, the storm, the 50-VM faults; figures in `result`."""

    def __init__(self, mode: Mode, opts: Options, progress: Progress) -> None:
        self.mode = mode
        self.opts = opts
        self.progress = progress
        self.result: dict[str, Any] = {"mode": mode.name, "title": mode.title}
        self.setup: dict[str, float] = {}
        self.refused: list[str] = []  # answers other than 202 to PUT /events, resent
        # Its own client: the storm's requests must not queue behind a 5 s default.
        self.http = HttpClient(timeout=120.0, connections=max(256, opts.hosts + 8))

    def _task(self, what: str, total: float | None) -> TaskID:
        return self.progress.add_task(f"{self.mode.name}: {what}", total=total)

    async def run(self, workdir: Path) -> dict[str, Any]:
        opts = self.opts
        spec = LabSpec(
            hosts=opts.hosts + 1,
            vms=0,
            projects=PROJECTS,
            ip_prefix=opts.ip_prefix,
            vm_mode="inline",
            heartbeat=False,
        )
        try:
            async with deploy(self.mode, opts) as where:
                self.result["where"] = where.where
                self.result["database"] = where.database
                self.result["bus_prefix"] = where.bus_prefix
                env = {
                    "OPENDOCTOR_MONITOR__ENABLED": "false",
                    "OPENDOCTOR_RECOVERY__ENABLED": "false",
                    "OPENDOCTOR_LOG_LEVEL": "WARNING",
                    # Every VM's owner subscribes: past the default cap per project.
                    "OPENDOCTOR_NOTIFIER__MAX_ALARMS_PER_PROJECT": str(opts.storm_vms + SINGLE_VMS),
                    **where.env,
                    **(opts.intake.env() if opts.intake.monitors else {}),
                }
                task = self._task(f"starting a lab of {spec.hosts} hosts, the service", None)
                started = time.monotonic()
                async with running_stack(
                    spec,
                    workdir,
                    env,
                    where.consumer_args,
                    self.mode.replicas,
                    egress_allow=where.egress_allow,
                ) as s:
                    self.setup["stack_start"] = time.monotonic() - started
                    self.progress.update(task, total=1, completed=1)
                    lab = await self._populate(s, spec)
                    alarms = await self._register(s, where)
                    self.result["storm"] = await self._storm(s, lab)
                    self.result["single"] = await self._single(s, lab, alarms)
                    if opts.kill_restart and (self.mode.replicas or 0) >= 2:
                        self.result["kill_restart"] = await self._kill_restart(s, lab)
        finally:
            await self.http.close()
        self.result["setup"] = self.setup
        return self.result

    async def _kill_restart(self, s: Stack, lab: Lab) -> dict[str, Any]:
        assert self.opts.kill_restart is not None
        task = self._task(f"{self.opts.kill_restart}-0 killed and restarted", None)

        async def put(body: list[dict[str, Any]]) -> float:
            return await self._put_events(s, body)

        result = await kill_restart(
            s, lab.storm_hosts, self.opts.kill_restart, self.opts.window, put, host_event
        )
        self.progress.update(task, total=1, completed=1)
        return result

    async def _populate(self, s: Stack, spec: LabSpec) -> Lab:
        opts = self.opts
        storm_hosts = [spec.host_name(i) for i in range(1, opts.hosts + 1)]
        lab = Lab(storm_hosts, spec.host_name(opts.hosts + 1))
        wanted = [(h, j) for h in storm_hosts for j in range(opts.vms_per_host)]
        wanted += [(lab.single_host, j) for j in range(SINGLE_VMS)]
        task = self._task(f"{len(wanted)} VMs", len(wanted))
        limit = asyncio.Semaphore(64)
        started = time.monotonic()

        async def make(host: str, j: int) -> None:
            async with limit:
                server = await s.lab.client.create_server(
                    f"{host}-vm{j + 1}", PROJECTS[j % len(PROJECTS)], host=host
                )
            lab.host_of[server.id] = host
            self.progress.advance(task)

        await asyncio.gather(*(make(h, j) for h, j in wanted))
        self.setup["vms_created"] = time.monotonic() - started

        async def known() -> bool:
            return len(await s.get("/v1/servers?limit=100000")) >= len(wanted)

        await wait_for(f"the service to learn about {len(wanted)} servers", known, 120, 0.2)
        self.setup["service_knows_vms"] = time.monotonic() - started
        return lab

    async def _register(self, s: Stack, where: Deployment) -> list[dict[str, Any]]:
        total = self.opts.storm_vms + SINGLE_VMS
        task = self._task(f"{total} alarms", total)
        started = time.monotonic()
        alarms = await s.register_alarms(
            where.action, concurrency=32, progress=lambda: self.progress.advance(task)
        )
        self.setup["alarms_registered"] = time.monotonic() - started
        return alarms

    async def _received(self, s: Stack) -> list[dict[str, Any]]:
        got = await s.received()
        return [r for records in got.values() for r in records]

    async def _put_events(self, s: Stack, body: list[dict[str, Any]]) -> float:
        """Send events as a monitor does: again, a moment later, while the service answers
        5xx or not at all (each refusal is counted in `self.refused`); the time of the 202.
        The events keep their `time`: what a resend costs counts in their T01→T09."""
        deadline = time.monotonic() + RESEND_FOR
        while True:
            try:
                resp = await self.http.put(s.api + "/events", json=body, headers=s.monitor)
            except HttpError as exc:
                problem = str(exc)
            else:
                if resp.status == 202:
                    return time.time()
                problem = f"HTTP {resp.status} {resp.body[:300]!r}"
                if resp.status < 500:
                    raise StackError(f"PUT /events refused: {problem}")
            self.refused.append(problem)
            if time.monotonic() > deadline:
                raise StackError(f"PUT /events still refused after {RESEND_FOR:.0f}s: {problem}")
            await asyncio.sleep(RESEND_AFTER)

    async def _storm(self, s: Stack, lab: Lab) -> dict[str, Any]:
        opts = self.opts
        stormed = set(lab.storm_hosts)
        expected = {sid for sid, h in lab.host_of.items() if h in stormed}
        for consumer in s.consumers.values():
            await s.http.delete(consumer.ready + "/received")
        task = self._task(
            f"storm: {opts.hosts} host faults, {len(expected)} notifications", len(expected)
        )
        intake = Intake(
            opts.intake, self.http, s.api + "/events", s.monitor, self._intake_servers(lab)
        )
        if intake.enabled:
            floor_task = self._task("intake against the idle service", None)
            await intake.measure_floor()
            await self._backlog(s)  # handled before the storm starts
            self.progress.update(floor_task, total=1, completed=1)
        sent: dict[str, float] = {}
        meter = CpuMeter(s)
        cpu_before = meter.sample()

        async def fail(host: str) -> float:
            at = sent[host] = time.time()
            return await self._put_events(s, [host_event(host, "down", at, f"storm-{host}")])

        accepted = await asyncio.gather(*(fail(h) for h in lab.storm_hosts))
        refused, self.refused = self.refused, []
        # While the storm is delivered, its VMs' monitors report them down.
        intake.start()
        first = min(sent.values())
        timeout = opts.storm_timeout or 60.0 + len(expected) / 100

        got: dict[str, list[dict[str, Any]]] = {}

        async def arrived() -> list[dict[str, Any]]:
            await s.received_more(got)
            return [r for rs in got.values() for r in rs if r["instance_id"] in expected]

        async def all_arrived() -> list[dict[str, Any]] | None:
            records = await arrived()
            self.progress.update(task, completed=len({r["instance_id"] for r in records}))
            return records if {r["instance_id"] for r in records} >= expected else None

        try:
            records = await wait_for("every storm notification", all_arrived, timeout, 0.5)
        except StackError:
            records = await arrived()
        latencies = [r["arrived"] - sent[lab.host_of[r["instance_id"]]] for r in records]
        last = max((r["arrived"] for r in records), default=None)
        intake_figures = await intake.stop(last)
        missing = len(expected - {r["instance_id"] for r in records})
        settled = await self._settled(s, lab.storm_hosts, first)
        cpu = meter.since(cpu_before, meter.sample())
        if intake_figures is not None:
            # What the intake left to handle, handled before the next part.
            intake_figures["backlog_seconds"] = await self._backlog(s)
        return {
            "events": opts.hosts,
            "refused": len(refused),
            "refusals": sorted(set(refused))[:5],
            "accept_seconds": max(accepted) - first,
            "accepted_per_s": opts.hosts / max(max(accepted) - first, 1e-9),
            "expected": len(expected),
            "notifications": len(records),
            "missing": missing,
            "deliver_seconds": None if last is None else last - first,
            "delivered_per_s": None if last is None else len(records) / max(last - first, 1e-9),
            "floor": await self._floor(s, None if last is None else last - first),
            "t01_t09": summary(latencies),
            # From the first send until the storm was handled (polled every 0.5 s): every
            # owner told and every server set to error, in either mode.
            "cpu_seconds": cpu,
            **settled,
            "intake": intake_figures,
        }

    async def _floor(self, s: Stack, ours: float | None) -> dict[str, Any] | None:
        """The storm's callbacks sent again by a bare aiohttp client in its own process
        (`tools.floor`) to the same consumers, all at once: how fast the sending alone
        goes on this machine, and our delivery time over it. The median of FLOOR_RUNS
        fan-outs: one alone varied by 60% from storm to storm on two cores."""
        if not self.opts.floor or self.opts.amqp_actions or ours is None:
            return None
        task = self._task("the storm's callbacks from a bare client (the floor)", None)
        callbacks = await sent_callbacks(s)
        consumers = [c.ready for c in s.consumers.values()]
        result = await floor.fan_out(consumers, callbacks, runs=FLOOR_RUNS)
        self.progress.update(task, total=1, completed=1)
        seconds = result.last_told_p50
        if not callbacks or not math.isfinite(seconds) or seconds <= 0:
            return None
        return {
            "callbacks": len(callbacks),
            "runs": len(result.runs),
            "seconds": seconds,
            "per_s": len(callbacks) / seconds,
            "missed": result.missed,
            "ratio": ours / seconds,
        }

    def _intake_servers(self, lab: Lab) -> list[tuple[str, str]]:
        """Up to `intake.servers` of the stormed hosts' servers, (id, host), taken from
        every host in turn."""
        per_host = [sorted(lab.on(h)) for h in lab.storm_hosts]
        turns = itertools.zip_longest(*per_host)
        servers = [(sid, lab.host_of[sid]) for turn in turns for sid in turn if sid is not None]
        return servers[: self.opts.intake.servers]

    async def _backlog(self, s: Stack) -> float:
        """Wait until the newest events (10,000 at most) are all handled; the seconds it
        took."""
        started = time.monotonic()

        async def handled() -> bool:
            events = await s.get("/v1/events?limit=10000")
            return all(e["processed"] for e in events)

        await wait_for("the events accepted to be handled", handled, 300, 0.2)
        return time.monotonic() - started

    async def _settled(self, s: Stack, hosts: list[str], first: float) -> dict[str, Any]:
        """Wait until every stormed host's servers are set to error (T03): the storm is
        over. The service's own timelines say where the time went."""
        names = set(hosts)
        # The intake's server faults are active too.
        limit = min(10_000, len(names) + self.opts.intake.servers + 10)
        listed = f"/v1/faults?status=active&limit={limit}"

        async def done() -> list[dict[str, Any]] | None:
            faults = [f for f in await s.get(listed) if f["instance_id"] is None]
            mine = [f for f in faults if f["hostname"] in names]
            return (
                mine if len(mine) == len(names) and all("T03" in f["trace"] for f in mine) else None
            )

        try:
            faults = await wait_for("the storm's servers to be set to error", done, 300, 0.5)
        except StackError:
            faults = [
                f
                for f in await s.get(listed)
                if f["hostname"] in names and f["instance_id"] is None
            ]

        def since_t01(checkpoint: str) -> list[float]:
            return [
                f["trace"][checkpoint] - f["trace"]["T01"]
                for f in faults
                if checkpoint in f["trace"]
            ]

        t03 = [f["trace"]["T03"] for f in faults if "T03" in f["trace"]]
        handled = [f["trace"] for f in faults if "T02" in f["trace"] and "T09" in f["trace"]]
        return {
            "stages": {
                # Queued on the bus + rules evaluated: affected servers known.
                "T01_T02": summary(since_t01("T02")),
                # The service's last first-attempt delivery of each fault.
                "T01_T09": summary(since_t01("T09")),
                "T01_T04": summary(since_t01("T04")),
                "T01_T03": summary(since_t01("T03")),
                # Once a fault's rules ran: its owners' deliveries.
                "T02_T09": summary([t["T09"] - t["T02"] for t in handled]),
                # ... and its servers set to error: in scaled modes its partition waits.
                "T02_T03": summary([t["T03"] - t["T02"] for t in handled if "T03" in t]),
            },
            "partition_hold": self._partition_hold(faults) if self.mode.backends else {},
            "settled_seconds": max(t03) - first if len(t03) == len(names) else None,
        }

    def _partition_hold(self, faults: list[dict[str, Any]]) -> dict[str, float]:
        """How long each event kept its bus partition: a partition hands over one event
        at a time, so the gap between the rules of two events of one partition (their T02)
        is the first one's handling after its rules (deliveries, writes, acknowledgement)
        plus the next one's pick-up and rules."""
        from opendoctor.bus.amqp import partition_of

        by_partition: dict[int, list[float]] = {}
        for f in faults:
            if "T02" in f["trace"]:
                key = partition_of(f["hostname"], self.opts.partitions)
                by_partition.setdefault(key, []).append(f["trace"]["T02"])
        gaps = []
        for times in by_partition.values():
            times.sort()
            gaps += [b - a for a, b in itertools.pairwise(times)]
        return summary(gaps)

    async def _single(self, s: Stack, lab: Lab, alarms: list[dict[str, Any]]) -> dict[str, Any]:
        runs = self.opts.runs
        host = lab.single_host
        expected = lab.on(host)
        mine = [a for a in alarms if _instance_of(a) in expected]
        task = self._task(f"{SINGLE_VMS}-VM host faults", runs)
        self.refused = []
        per_notice: list[float] = []
        last: list[float] = []
        missing = 0
        for run in range(runs):
            for consumer in s.consumers.values():
                await s.http.delete(consumer.ready + "/received")
            at = time.time()
            await self._put_events(s, [host_event(host, "down", at, f"single-{run}-down")])

            async def heard() -> list[dict[str, Any]] | None:
                records = [r for r in await self._received(s) if r["instance_id"] in expected]
                return records if {r["instance_id"] for r in records} >= expected else None

            try:
                records = await wait_for(f"{host}'s owners to be told", heard, 30, 0.02)
            except StackError:
                records = [r for r in await self._received(s) if r["instance_id"] in expected]
            missing += len(expected - {r["instance_id"] for r in records})
            per_notice.extend(r["arrived"] - at for r in records)
            if records:
                last.append(max(r["arrived"] for r in records) - at)
            await self._clear(s, host, run)
            await s.rearm(mine)
            self.progress.advance(task)
        return {
            "vms": len(expected),
            "runs": runs,
            "notifications": len(per_notice),
            "missing": missing,
            "refused": len(self.refused),
            "t01_t09": summary(per_notice),
            "last": summary(last),
        }

    async def _clear(self, s: Stack, host: str, run: int) -> None:
        """The host is back: its fault clears, its servers are active again."""

        async def fault() -> dict[str, Any] | None:
            faults = await s.get("/v1/faults?status=active&limit=10000")
            return next((f for f in faults if f["hostname"] == host), None)

        found = await wait_for(f"{host}'s fault", fault, 10)
        await self._put_events(s, [host_event(host, "up", time.time(), f"single-{run}-up")])

        async def cleared() -> bool:
            f = await s.get(f"/v1/faults/{found['id']}?notifications=false")
            return bool(f["status"] == "cleared")

        await wait_for(f"{host}'s fault to clear", cleared, 30)


def _instance_of(alarm: dict[str, Any]) -> str | None:
    for q in alarm.get("event_rule", {}).get("query", []):
        if q.get("field") == "traits.instance_id":
            return str(q["value"])
    return None


# --- all modes -----------------------------------------------------------------------------


async def storm(
    modes: list[str], opts: Options, console: Console, skipped: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run each mode in turn; the figures of all, side by side, with the ratios."""
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if opts.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="od-storm-")))
        else:
            root = opts.workdir
        progress = stack.enter_context(Progress(console=console))
        for name in modes:
            run = ModeRun(MODES[name], opts, progress)
            results[name] = await run.run(root / name)
    return {
        "hosts": opts.hosts,
        "vms_per_host": opts.vms_per_host,
        "vms": opts.storm_vms,
        "single_vms": SINGLE_VMS,
        "runs": opts.runs,
        "amqp_actions": opts.amqp_actions,
        "partitions": opts.partitions,
        "kill_restart": opts.kill_restart,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "modes": results,
        "skipped": skipped or {},
        "ratios": ratios(results),
    }


# The figures compared between modes: (label, path into a mode's result, unit).
async def available(modes: list[str], opts: Options) -> dict[str, str]:
    """The modes that cannot run here, with why (their servers do not answer)."""
    if not any(MODES[m].backends for m in modes):
        return {}
    try:
        await check_backends(opts)
    except Unavailable as exc:
        return {m: str(exc) for m in modes if MODES[m].backends}
    return {}
