"""CPU seconds per group of processes during a storm, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opendoctor.tools.stack import Stack


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: pid -> (parent pid, command name, CPU seconds so far). Linux only
    (empty elsewhere)."""
    out: dict[int, tuple[int, str, float]] = {}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except (OSError, ValueError, AttributeError):
        return out
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # After the name: state, ppid, ... utime (11th), stime (12th) in clock ticks.
        out[pid] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            parts = [float(x) for x in fh.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    return (sum(parts) - idle) / tick, sum(parts) / tick


GROUPS = ("service", "postgresql", "rabbitmq", "consumers", "lab", "bench")


class CpuMeter:
    """CPU seconds spent by each part of a stack between two moments: the service, the
    consumers, the lab (its manager and hosts), PostgreSQL, RabbitMQ, the bench itself."""

    def __init__(self, s: Stack) -> None:
        self.service = s.service_pids()
        self.consumers = {c.proc.pid for c in s.consumers.values() if c.proc}
        self.lab = s.lab.pid
        self.me = os.getpid()

    def _group(self, pid: int, ppid: int, comm: str) -> str | None:
        if pid in self.service or ppid in self.service:  # its front process too
            return "service"
        if pid in self.consumers:
            return "consumers"
        if self.lab in (pid, ppid):
            return "lab"
        if pid == self.me:
            return "bench"
        if comm == "postgres":
            return "postgresql"
        if comm.startswith("beam") or comm in ("epmd", "erl_child_setup"):
            return "rabbitmq"
        return None

    def sample(self) -> tuple[float, dict[int, tuple[str, float]], tuple[float, float] | None]:
        found = {}
        for pid, (ppid, comm, cpu) in _processes().items():
            group = self._group(pid, ppid, comm)
            if group is not None:
                found[pid] = (group, cpu)
        return time.monotonic(), found, _machine_busy()

    @staticmethod
    def since(
        before: tuple[float, dict[int, tuple[str, float]], tuple[float, float] | None],
        after: tuple[float, dict[int, tuple[str, float]], tuple[float, float] | None],
    ) -> dict[str, float]:
        """CPU seconds per part between two samples, the wall time, the machine's use."""
        out = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, cpu) in after[1].items():
            # A process started meanwhile (a new database connection) counts from zero.
            out[group] += cpu - before[1].get(pid, (group, 0.0))[1]
        out["wall"] = after[0] - before[0]
        if before[2] is not None and after[2] is not None:
            busy = after[2][0] - before[2][0]
            total = after[2][1] - before[2][1]
            out["machine_busy"] = busy / total if total > 0 else 0.0
            # Whatever else ran meanwhile (the kernel's own work included).
            out["other"] = max(0.0, busy - sum(out[k] for k in GROUPS))
        return out


# --- one mode ------------------------------------------------------------------------------
