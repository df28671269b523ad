"""The fan-out floor: how fast a bare aiohttp client tells the same owners.

A benchmark's "last owner told" means little alone: on two shared cores, one Python
process cannot push a thousand HTTP callbacks out in much less than a few hundred
milliseconds, whatever it is. The floor is that process: plain aiohttp, one
`ClientSession`, the service's connection limit, every POST fired at once with
`asyncio.gather`, nothing else (no matching, no outbox, no semaphores). It sends the
exact callbacks the service sent (same URLs, body bytes and headers) to the same
consumer processes, in the same run as the measurement, and the consumers' own
arrival times (`GET /received`) say when each owner was told. Ours divided by the
floor is what the service costs on top of the sending itself.

Use::

    callbacks = floor.from_arrivals(consumer_url, arrivals)  # what the service sent
    result = await floor.fan_out(consumer_urls, callbacks, runs=10)
    result.last_told_p50, result.last_told_p99, result.per_callback_p99

or, to interleave the floor's runs with the service's own (same noise on a shared
machine, and a connection pool kept warm between runs as the service keeps its own)::

    async with floor.BareClient(connections=256) as bare:
        for _ in range(runs):
            ...  # one fault of the service
            run = await bare.fan_out(consumer_urls, callbacks)

The first fan-out of a client is preceded by an untimed one (`warmup`): its pool of
connections is open, as the service's is after its first fault. The client runs in its
own process (`python -m opendoctor.tools.floor`), so neither the caller's event loop
nor the service shares its core time; the caller clears the consumers (`DELETE
/received`) before each run and waits for every callback to arrive. The consumers
record one callback per `x-openstack-request-id`: each must carry its own (the
service's do).

The floor deliberately imports aiohttp itself rather than `infra.httpclient`: the
point is to measure the bare library, without any of our code around it.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.procs import die_with_parent

# The service's own default (`notifier.connections`).
CONNECTIONS = 256


@dataclass(frozen=True, slots=True)
class Callback:
    """One POST as the service sends it: its URL, body bytes and headers."""

    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(slots=True)
class FloorRun:
    """One fan-out: seconds from the first send to each arrival, in arrival order."""

    arrivals: list[float]
    expected: int
    errors: int = 0

    @property
    def last_told(self) -> float:
        return max(self.arrivals) if self.arrivals else math.inf

    @property
    def missed(self) -> int:
        return self.expected - len(self.arrivals)


@dataclass(slots=True)
class FloorResult:
    """Every run's figures; the properties summarise them (seconds)."""

    runs: list[FloorRun] = field(default_factory=list)

    @property
    def last_told(self) -> list[float]:
        return [r.last_told for r in self.runs]

    @property
    def last_told_p50(self) -> float:
        return percentile(self.last_told, 50)

    @property
    def last_told_p99(self) -> float:
        return percentile(self.last_told, 99)

    @property
    def per_callback_p50(self) -> float:
        return percentile([a for r in self.runs for a in r.arrivals], 50)

    @property
    def per_callback_p99(self) -> float:
        return percentile([a for r in self.runs for a in r.arrivals], 99)

    @property
    def missed(self) -> int:
        return sum(r.missed for r in self.runs)

    def summary(self) -> dict[str, Any]:
        return {
            "runs": len(self.runs),
            "callbacks": self.runs[0].expected if self.runs else 0,
            "missed": self.missed,
            "errors": sum(r.errors for r in self.runs),
            "last_told": {"p50": self.last_told_p50, "p99": self.last_told_p99},
            "per_callback": {"p50": self.per_callback_p50, "p99": self.per_callback_p99},
            "per_run_last_told": self.last_told,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def from_arrivals(consumer_url: str, arrivals: Sequence[Mapping[str, Any]]) -> list[Callback]:
    """The callbacks a consumer received (its `GET /arrivals`), to send again: the same
    path, body (re-encoded as the service encodes it: orjson, compact) and headers."""
    out = []
    for a in arrivals:
        path = str(a["path"])
        if not path.startswith("/") or not isinstance(a["body"], dict):
            continue  # AMQP arrivals, or a body that was no callback
        headers = {"content-type": str(a["content_type"] or "application/json")}
        if a.get("request_id"):
            headers["x-openstack-request-id"] = str(a["request_id"])
        out.append(Callback(consumer_url.rstrip("/") + path, orjson.dumps(a["body"]), headers))
    return out


class BareClient:
    """The bare client's process, kept for several fan-outs (its pool stays warm)."""

    def __init__(
        self, connections: int = CONNECTIONS, timeout: float = 30.0, warmup: int = 1
    ) -> None:
        self.connections = connections
        self.timeout = timeout
        # Untimed fan-outs before the first timed one: the pool opened, as the service's
        # is after its first fault. A cold pool opens up to `connections` at once, more
        # than a consumer's listen backlog takes: the SYNs dropped come back a second
        # later, and that second would be the floor.
        self.warmup = warmup
        self._proc: asyncio.subprocess.Process | None = None
        self._http = HttpClient(timeout=10.0)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._loaded: Sequence[Callback] | None = None

    async def __aenter__(self) -> BareClient:
        self._dir = tempfile.TemporaryDirectory(prefix="opendoctor-floor-")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opendoctor.tools.floor",
            str(self.connections),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent(),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await self._http.close()
        if self._dir is not None:
            self._dir.cleanup()

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("BareClient used outside `async with`")
        proc.stdin.write(orjson.dumps(command) + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
        if not line:
            raise RuntimeError(f"the floor's client exited ({await proc.wait()})")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def _load(self, callbacks: Sequence[Callback]) -> None:
        """Hand the callbacks over once (a file: a thousand bodies are too much for a
        pipe line to be quick), encoded before the clock starts."""
        if self._loaded is callbacks:
            return
        assert self._dir is not None
        path = Path(self._dir.name) / "callbacks.json"
        wire = [[c.url, c.body.decode(), dict(c.headers)] for c in callbacks]
        await asyncio.to_thread(path.write_bytes, orjson.dumps(wire))
        await self._ask({"load": str(path)})
        self._loaded = callbacks

    async def _received(self, consumers: Sequence[str]) -> list[float]:
        arrived: list[float] = []
        for url in consumers:
            resp = await self._http.get(url.rstrip("/") + "/received")
            arrived += [float(r["arrived"]) for r in resp.json() or []]
        return arrived

    async def fan_out(self, consumers: Sequence[str], callbacks: Sequence[Callback]) -> FloorRun:
        """One run: clear the consumers, fire every callback at once, wait until all
        arrived (or `timeout`), and read when each did. The first call warms the pool up
        first (`warmup`)."""
        await self._load(callbacks)
        while self.warmup > 0:
            self.warmup -= 1
            await self._run(consumers, callbacks)
        return await self._run(consumers, callbacks)

    async def _run(self, consumers: Sequence[str], callbacks: Sequence[Callback]) -> FloorRun:
        for url in consumers:
            await self._http.delete(url.rstrip("/") + "/received")
        answer = await self._ask({"go": True})
        started = float(answer["started"])
        deadline = time.monotonic() + self.timeout
        arrived = await self._received(consumers)
        while len(arrived) < len(callbacks) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            arrived = await self._received(consumers)
        for url in consumers:  # leave them as found: empty
            await self._http.delete(url.rstrip("/") + "/received")
        return FloorRun(sorted(a - started for a in arrived), len(callbacks), int(answer["errors"]))


async def fan_out(
    consumers: Sequence[str],
    callbacks: Sequence[Callback],
    runs: int = 1,
    connections: int = CONNECTIONS,
    warmup: int = 1,
) -> FloorResult:
    """`runs` fan-outs of `callbacks` to the consumers at base URLs `consumers` by a
    bare aiohttp client in its own process, after `warmup` untimed ones; see the module
    docstring."""
    result = FloorResult()
    async with BareClient(connections, warmup=warmup) as bare:
        for _ in range(runs):
            result.runs.append(await bare.fan_out(consumers, callbacks))
    return result


def fmt_ratio(ours: float | None, floor: float | None) -> str:
    """`ours / floor` as people read it (`1.23 x`), or a dash."""
    if ours is None or floor is None or not math.isfinite(floor) or floor <= 0:
        return "—"
    return f"{ours / floor:.2f} x"


# --- the client's process -----------------------------------------------------------------


async def _serve(connections: int) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    callbacks: list[tuple[str, bytes, dict[str, str]]] = []
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(url: str, body: bytes, headers: dict[str, str]) -> bool:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status < 300
            except (aiohttp.ClientError, OSError):
                return False

        while line := await reader.readline():
            command = orjson.loads(line)
            if "load" in command:
                raw = orjson.loads(await asyncio.to_thread(Path(command["load"]).read_bytes))
                callbacks = [(u, b.encode(), h) for u, b, h in raw]
                answer: dict[str, Any] = {"loaded": len(callbacks)}
            else:
                started = time.time()
                ok = await asyncio.gather(*(post(u, b, h) for u, b, h in callbacks))
                answer = {"started": started, "errors": ok.count(False)}
            sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
            sys.stdout.buffer.flush()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else CONNECTIONS))
