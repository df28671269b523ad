"""Events accepted while a storm is delivered, beside the same flow against the idle service.

A storm brings more than its host events: every VM of a dead host falls silent, and its
guest-heartbeat monitor says so. Here, `monitors` monitors per request size B keep
reporting `compute.instance.heartbeat.missed` for the stormed hosts' servers, B events
per `PUT /events`, one request after the other each, from the moment the storm's host
events are accepted until its last notification arrived. The sizes take turns, half a
second each, so that each samples the whole delivery and none is slowed by another's
requests. The inspector opens a fault
for each such server (a repeat is a duplicate) and tells its owner nothing more: the
host's fault already did (tests/integration/pipeline/test_server_fault.py).

The floor is the same monitors and requests against the idle service, before the storm,
for a few seconds per size; their VMs are reported up there (reporting them down would open
faults and tell owners before the storm). Figures per size: events accepted (202) per
second, PUT latency p50/p99, refusals by kind (429 rate limit, 503, other, no answer),
and the storm's events/s over the floor's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.tools.bench import summary

MISSED = "compute.instance.heartbeat.missed"
PAUSE_AFTER_REFUSAL = 0.1  # seconds a monitor waits after a 429 or 5xx, as the storm's do
SLICE = 0.5  # seconds each request size reports before the next one's turn


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    monitors: int = 4  # per request size; 0: no intake measured
    batches: tuple[int, ...] = (1, 100)  # events per request
    # The stormed hosts' servers reported on, taken across every host: each one's first
    # report opens a fault, the rest are repeats (10,000 faults more would swamp the
    # storm it measures).
    servers: int = 1000
    floor_seconds: float = 3.0  # the idle service's flow lasts this long
    events_rate: float = 1_000_000.0  # api.events_rate and api.events_burst for the run

    def env(self) -> dict[str, str]:
        """The service's environment: every monitor of the bench reports with one token
        (one rate-limit bucket), so the limit is set far above what they send."""
        return {
            "OPENDOCTOR_API__EVENTS_RATE": str(self.events_rate),
            "OPENDOCTOR_API__EVENTS_BURST": str(int(self.events_rate)),
        }


@dataclass(slots=True)
class Sent:
    """One PUT /events: when it left, when its answer came, its events, the answer."""

    started: float
    ended: float
    events: int
    status: int | None  # None: no answer


def bodies(servers: Sequence[tuple[str, str]], batch: int, status: str) -> list[bytes]:
    """Request bodies of `batch` events each, about `servers` ((id, host) pairs) in turn,
    encoded once: the bench's own CPU should go to sending."""
    events = [
        {
            "time": time.time(),
            "type": MISSED,
            "details": {
                "hostname": host,
                "instance_id": sid,
                "status": status,
                "monitor": "bench-storm-intake",
            },
        }
        for sid, host in servers
    ]
    count = max(1, len(events) // batch)
    out = []
    for i in range(count):
        chunk = [events[(i * batch + j) % len(events)] for j in range(batch)]
        out.append(orjson.dumps(chunk))
    return out


class Flow:
    """`monitors` monitors reporting `batch` events per request, one slice of time after
    another; what each request got, and when the flow was on."""

    def __init__(
        self, http: HttpClient, url: str, headers: dict[str, str], batch: int, monitors: int
    ) -> None:
        self.http = http
        self.url = url
        self.headers = {**headers, "content-type": "application/json"}
        self.batch = batch
        self.monitors = monitors
        self.sent: list[Sent] = []
        self.on: list[tuple[float, float]] = []  # (from, to) of each slice

    def reset(self) -> None:
        self.sent, self.on = [], []

    async def slice(self, payloads: list[bytes], seconds: float, stop: asyncio.Event) -> None:
        """Report for `seconds` (or until `stop`); the requests under way are answered
        before the slice ends."""
        deadline = time.monotonic() + seconds
        began = time.time()

        async def monitor(first: int) -> None:
            i = first
            while not stop.is_set() and time.monotonic() < deadline:
                body = payloads[i % len(payloads)]
                i += self.monitors
                started = time.time()
                status: int | None
                try:
                    resp = await self.http.put(self.url, content=body, headers=self.headers)
                    status = resp.status
                except HttpError:
                    status = None
                self.sent.append(Sent(started, time.time(), self.batch, status))
                if status != 202:
                    await asyncio.sleep(PAUSE_AFTER_REFUSAL)

        await asyncio.gather(*(monitor(m) for m in range(self.monitors)))
        self.on.append((began, time.time()))

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """What the requests answered within [start, end] show, over the time the flow
        was on in it."""
        inside = [r for r in self.sent if start <= r.ended <= end]
        ok = [r for r in inside if r.status == 202]
        seconds = sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.on)
        refused: dict[str, int] = {}
        for r in inside:
            if r.status != 202:
                kind = "no answer" if r.status is None else str(r.status)
                refused[kind] = refused.get(kind, 0) + 1
        events = sum(r.events for r in ok)
        return {
            "seconds": seconds,
            "requests": len(inside),
            "events": events,
            # None: no request was answered in the window (it was too short).
            "events_per_s": events / seconds if inside and seconds > 0 else None,
            "latency": summary([r.ended - r.started for r in ok]),
            "refused": refused,
        }


class Intake:
    """The flows of every request size, taking turns: against the idle service
    (`measure_floor`), then during a storm (`start` ... `stop`)."""

    def __init__(
        self,
        opts: IntakeOptions,
        http: HttpClient,
        url: str,
        headers: dict[str, str],
        servers: Sequence[tuple[str, str]],
    ) -> None:
        self.opts = opts
        self.servers = list(servers)
        self.flows = {b: Flow(http, url, headers, b, opts.monitors) for b in opts.batches}
        self._stop = asyncio.Event()
        self._task: asyncio.Future[None] | None = None
        self._started = 0.0
        self.floor: dict[int, dict[str, Any]] = {}

    @property
    def enabled(self) -> bool:
        return self.opts.monitors > 0 and bool(self.servers) and bool(self.flows)

    def _launch(self, status: str) -> None:
        """The flows take turns (`SLICE` seconds each) until stopped: each size samples
        the whole of what it is measured in, and no flow's requests are in another's
        figures."""
        self._stop = stop = asyncio.Event()
        payloads = {b: bodies(self.servers, b, status) for b in self.flows}
        for flow in self.flows.values():
            flow.reset()

        async def turns() -> None:
            while not stop.is_set():
                for b, flow in self.flows.items():
                    if stop.is_set():
                        break
                    await flow.slice(payloads[b], SLICE, stop)

        self._started = time.time()
        self._task = asyncio.ensure_future(turns())

    async def _halt(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def measure_floor(self) -> None:
        """The flows against the idle service, `floor_seconds` each, their VMs reported up."""
        if not self.enabled:
            return
        self._launch("up")
        await asyncio.sleep(self.opts.floor_seconds * len(self.flows))
        end = time.time()
        await self._halt()
        self.floor = {b: f.figures(self._started, end) for b, f in self.flows.items()}

    def start(self) -> None:
        """The flows during the storm, its servers reported down."""
        if self.enabled:
            self._launch("down")

    async def stop(self, end: float | None) -> dict[str, Any] | None:
        """Stop the flows; the figures of the requests answered by `end` (the storm's last
        notification; None: now), beside the floor's."""
        if not self.enabled or self._task is None:
            return None
        await self._halt()
        until = time.time() if end is None else end
        flows: dict[str, Any] = {}
        for b, flow in self.flows.items():
            storm = flow.figures(self._started, until)
            floor = self.floor.get(b)
            base = floor["events_per_s"] if floor else None
            rate = storm["events_per_s"]
            flows[str(b)] = {
                "floor": floor,
                "storm": storm,
                "ratio": rate / base if rate is not None and base else None,
            }
        # The best size's: what the service accepts from monitors that batch.
        best = max((f["storm"]["events_per_s"] or 0.0 for f in flows.values()), default=0.0)
        floor_best = max(
            ((f["floor"] or {}).get("events_per_s") or 0.0 for f in flows.values()), default=0.0
        )
        return {
            "monitors": self.opts.monitors,
            "events_rate": self.opts.events_rate,
            "floor_seconds": self.opts.floor_seconds,
            "flows": flows,
            "storm_per_s": best or None,
            "floor_per_s": floor_best or None,
            "ratio": best / floor_best if best and floor_best else None,
        }
