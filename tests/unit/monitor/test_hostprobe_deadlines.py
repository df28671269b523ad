"""Jitter-aware miss counting, on a clock of our own: no sockets, no waiting.

A `Beat` plays the prober's rounds against a simulated host: each round is sent at its
tick (or late, as a busy event loop sends it), each path answers after a delay of the
test's choosing or not at all, and the prober judges every millisecond in between
(finer than it ever does, so no verdict is missed that it could reach).
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import ValidationError

from opendoctor.core.model import HOST_DOWN, HOST_UNREACHABLE, Event, Host
from opendoctor.core.settings import MonitorSettings
from opendoctor.monitor.deadlines import AnswerTimes, Clamp, Rounds
from opendoctor.monitor.hostprobe import HostProber

PRIMARY, ALT = ("10.9.1.1", 4100), ("10.9.2.1", 4100)
# seconds after the probe went out that a path answers it, None: never
Reply = Callable[[int], float | None]


@pytest.fixture(autouse=True)
async def _reports_delivered() -> AsyncIterator[None]:
    """Reports go out as tasks of the running loop: let them finish before it closes."""
    yield
    await asyncio.sleep(0)


def fast(seq: int) -> float:
    return 0.0003


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Beat:
    def __init__(self, interval: float = 0.01, misses: int = 3, alt: bool = True) -> None:
        self.clock = Clock()
        self.interval = interval

        async def emit(event: Event) -> None:
            pass

        self.prober = HostProber(
            MonitorSettings(interval=interval, misses=misses), emit, self.clock
        )
        self.prober.watch(Host("h1", PRIMARY[0], 4100, alt_address=ALT[0] if alt else None))
        self.replies: dict[tuple[str, int], Reply] = {PRIMARY: fast}
        if alt:
            self.replies[ALT] = fast
        self._due: list[tuple[float, int, tuple[str, int]]] = []
        # (time, open reports) at each change of what the prober reported about h1
        self.verdicts: list[tuple[float, tuple[str, ...]]] = []

    def _judge(self, at: float) -> None:
        self.clock.now = at
        while self._due and self._due[0][0] <= at:
            when, seq, addr = heapq.heappop(self._due)
            self.prober.answered(addr, seq, when)
        self.prober.judge(at)
        now = tuple(self.prober.reported("h1"))
        if now != (self.verdicts[-1][1] if self.verdicts else ()):
            self.verdicts.append((at, now))

    def run(self, rounds: int, late: Callable[[int], float] = lambda i: 0.0) -> None:
        """`rounds` rounds, round i sent `late(i)` seconds after its tick."""
        start = self.clock.now
        for i in range(rounds):
            tick = start + i * self.interval + late(i)
            tick = max(tick, self.clock.now)
            self._judge(tick)
            sent = self.prober.send_round()
            for addr, reply in self.replies.items():
                delay = reply(self.prober.seq)
                if delay is not None:
                    heapq.heappush(self._due, (sent + delay, self.prober.seq, addr))
            step = tick + 0.001
            while step < start + (i + 1) * self.interval:
                self._judge(step)
                step += 0.001
        self.clock.now = start + rounds * self.interval

    def kinds(self, kind: str) -> list[float]:
        """When `kind` was newly reported."""
        out, before = [], ()
        for at, now in self.verdicts:
            if kind in now and kind not in before:
                out.append(at)
            before = now
        return out


def lose(seqs: set[int], delay: float = 0.0003) -> Reply:
    return lambda seq: None if seq in seqs else delay


async def test_slow_answers_are_not_misses() -> None:
    """A path that always answers after 35 ms, at a 10 ms beat: three probes are out at
    every tick (the old rule counted them missed), none is overdue."""
    beat = Beat()
    beat.replies = {PRIMARY: lambda seq: 0.035, ALT: lambda seq: 0.035}
    beat.run(500)
    assert beat.verdicts == []
    deadline = beat.prober.deadline("h1")
    assert deadline is not None and 0.034 < deadline <= 0.1


async def test_jittery_answers_are_not_misses() -> None:
    rng = random.Random(7)
    beat = Beat()
    beat.replies = {PRIMARY: lambda seq: rng.uniform(0.0002, 0.045), ALT: lambda s: 0.0003}
    beat.run(2000)
    assert beat.verdicts == []


async def test_late_ticks_are_not_blamed_on_the_hosts() -> None:
    """Our loop runs late, every third round by up to three intervals: the answers wait
    in the socket and count when read; only probes actually sent can be missed."""
    rng = random.Random(3)
    beat = Beat()
    beat.run(1500, late=lambda i: rng.uniform(0.0, 0.03) if i % 3 == 0 else 0.0)
    assert beat.verdicts == []


def test_the_deadline_follows_the_path_within_its_clamp() -> None:
    clamp = Clamp.for_interval(0.01)
    times = AnswerTimes()
    assert times.deadline(clamp) == clamp.ceiling == 0.1  # not timed yet: the ceiling
    for _ in range(50):
        times.sample(0.0003)
    assert times.deadline(clamp) == clamp.floor == 0.005  # loopback: the floor
    for _ in range(50):
        times.sample(0.02)
    assert 0.02 < times.deadline(clamp) < 0.03
    times.sample(5.0)  # a host that froze for five seconds
    assert times.deadline(clamp) == clamp.ceiling


def test_rounds_remember_when_they_went_out() -> None:
    rounds = Rounds(start=100, keep=4)
    for seq in range(101, 121):
        rounds.sent(seq, float(seq))
    assert rounds.newest == 120
    assert rounds.sent_at(120) == 120.0 and rounds.sent_at(101) is None  # forgotten
    assert rounds.newest_sent_by(117.5) == 117
    assert rounds.newest_sent_by(1000.0) == 120
    with pytest.raises(ValueError, match="out of order"):
        rounds.sent(122, 122.0)


async def test_a_dead_host_is_down_once_its_probes_are_overdue_not_before() -> None:
    beat = Beat()
    beat.run(50)
    died = beat.clock.now - 0.004  # between two rounds
    first = beat.prober.seq + 1
    beat.replies = {PRIMARY: lambda seq: None, ALT: lambda seq: None}
    beat.run(10)
    (down,) = beat.kinds(HOST_DOWN)
    assert beat.kinds(HOST_UNREACHABLE) == []
    # Three probes missed: sent at first, +10 ms, +20 ms, overdue 5 ms (the floor) later.
    sent_third = died + 0.004 + 0.02
    assert sent_third + 0.005 <= down <= sent_third + 0.005 + 0.002
    assert beat.prober.reported("h1") == [HOST_DOWN]
    assert first == beat.prober.seq - 9


async def test_a_lost_answer_or_two_on_a_path_is_no_fault() -> None:
    beat = Beat()
    base = beat.prober.seq
    # The address loses runs of two, the alt address every other answer.
    beat.replies = {
        PRIMARY: lose({base + n for n in range(1, 600) if n % 10 in (3, 4)}),
        ALT: lose({base + n for n in range(1, 600, 2)}),
    }
    beat.run(600)
    assert beat.verdicts == []


async def test_the_address_alone_is_unreachable_after_twice_the_misses_not_down() -> None:
    # One path's silence is half the evidence of two paths': a run of `misses` there is
    # loss (p ** 3, a thousand times likelier than p ** 6), twice that is a cut link.
    beat = Beat()
    base = beat.prober.seq
    beat.replies[PRIMARY] = lose({base + n for n in range(100, 105)})
    beat.run(200)
    assert beat.verdicts == []

    beat = Beat()
    base = beat.prober.seq
    beat.replies[PRIMARY] = lose({base + n for n in range(100, 106)})
    beat.run(200)
    assert beat.kinds(HOST_UNREACHABLE) and beat.kinds(HOST_DOWN) == []
    assert beat.prober.reported("h1") == []  # its next answer closed the report


async def test_a_host_with_one_path_is_down_after_twice_the_misses() -> None:
    beat = Beat(alt=False)
    base = beat.prober.seq
    beat.replies[PRIMARY] = lose({base + n for n in range(100, 105)})
    beat.run(200)
    assert beat.verdicts == []

    beat = Beat(alt=False)
    base = beat.prober.seq
    beat.replies[PRIMARY] = lose({base + n for n in range(100, 106)})
    beat.run(200)
    assert beat.kinds(HOST_DOWN) and beat.prober.reported("h1") == []


async def test_down_needs_misses_in_a_row_on_both_paths_at_once() -> None:
    beat = Beat()
    base = beat.prober.seq
    # Three in a row on each path, overlapping by two only: no moment when both are out.
    beat.replies = {
        PRIMARY: lose({base + 100, base + 101, base + 102}),
        ALT: lose({base + 101, base + 102, base + 103}),
    }
    beat.run(200)
    assert beat.kinds(HOST_DOWN) == []
    # The same three on both: that is a host silent for three probes, and so down.
    base = beat.prober.seq
    beat.replies = {addr: lose({base + 10, base + 11, base + 12}) for addr in (PRIMARY, ALT)}
    beat.run(100)
    assert len(beat.kinds(HOST_DOWN)) == 1


@pytest.mark.parametrize("loss", [0.01, 0.05])
async def test_independent_loss_on_both_paths_never_makes_a_host_down(loss: float) -> None:
    """100 simulated seconds at a 10 ms beat with `loss` on each path: a false "down"
    needs three in a row on both at once (p ** 6 a round: 2e-8 at 5 %)."""
    rng = random.Random(11)
    beat = Beat()
    beat.replies = {
        addr: lambda seq: None if rng.random() < loss else 0.0003 for addr in (PRIMARY, ALT)
    }
    beat.run(10_000)
    assert beat.kinds(HOST_DOWN) == []


async def test_a_host_without_an_alt_path_is_down_on_its_address_alone() -> None:
    beat = Beat(alt=False)
    base = beat.prober.seq
    beat.replies[PRIMARY] = lose({base + 20, base + 21})
    beat.run(100)
    assert beat.verdicts == []
    beat.replies[PRIMARY] = lambda seq: None
    beat.run(10)
    assert len(beat.kinds(HOST_DOWN)) == 1


async def test_answers_to_probes_never_sent_count_for_nothing() -> None:
    beat = Beat()
    beat.run(20)
    beat.replies = {PRIMARY: lambda seq: None, ALT: lambda seq: None}
    for _ in range(10):
        beat.run(1)
        beat.prober.answered(PRIMARY, beat.prober.seq + 1)  # a guess at the next probe
        beat.prober.answered(ALT, 2**62)
    assert len(beat.kinds(HOST_DOWN)) == 1


@pytest.mark.parametrize("interval", [0.0099, 0.001, 0.0, -1.0, float("nan")])
def test_probe_intervals_below_ten_milliseconds_are_refused(interval: float) -> None:
    with pytest.raises(ValidationError, match=r"at least 0\.01 s"):
        MonitorSettings(interval=interval)
    assert MonitorSettings(interval=0.01).interval == 0.01
