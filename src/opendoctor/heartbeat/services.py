"""The guest agent's checks: one health check per named service, and their restarts.

A check or a restart is an async callable answering `(ok, reason)`; `command_check`
makes one from a shell command (exit status 0 is ok). Checks run on the agent's own
cadence, all at once, and the agent answers challenges with their latest results, so a
slow check never makes an answer late. A check that overruns its timeout, or raises,
counts as failed. Standard library only: it runs inside small VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opendoctor.wire import heartbeat as p

Health = Callable[[], Awaitable[tuple[bool, str | None]]]
Result = tuple[bool, str | None]

MAX_REASON = 512
# One service's restart command may run this long at most, whatever the host asks.
MAX_RESTART_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Service:
    """A named service in the guest: how to check it and, optionally, restart it."""

    name: str
    check: Health
    restart: Health | None = None

    def __post_init__(self) -> None:
        if not p.SERVICE_CHARS.issuperset(self.name) or not 0 < len(self.name) <= (
            p.MAX_SERVICE_NAME
        ):
            raise ValueError(
                f"service name {self.name!r}: 1-{p.MAX_SERVICE_NAME} of letters, digits, . _ - @"
            )


async def run_check(check: Health, timeout: float, what: str = "health check") -> Result:
    """`check()` within `timeout` seconds; every failure becomes `(False, reason)`."""
    try:
        async with asyncio.timeout(timeout):
            ok, reason = await check()
    except TimeoutError:
        return False, f"{what} did not finish within {timeout:g} s"
    except Exception as exc:
        return False, f"{what} failed: {exc!r}"[:MAX_REASON]
    if ok:
        return True, None
    return False, (reason or f"{what} failed")[:MAX_REASON]


class ServiceChecks:
    """The latest result of every service's check, and the restarts in progress."""

    def __init__(self, services: Sequence[Service], timeout: float = 1.0) -> None:
        if len(services) > p.MAX_SERVICES:
            raise ValueError(f"at most {p.MAX_SERVICES} services")
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError("each service needs a name of its own")
        self.services = {s.name: s for s in services}
        self.timeout = timeout
        self.results: dict[str, Result] = dict.fromkeys(names, (True, None))
        self.restarts: dict[str, int] = dict.fromkeys(names, 0)
        self._restarting: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.services)

    async def refresh(self) -> list[str]:
        """Run every check at once; the names of the services whose result changed."""
        names = list(self.services)
        results = await asyncio.gather(*(self._check(n) for n in names))
        changed = [n for n, r in zip(names, results, strict=True) if r != self.results[n]]
        self.results.update(zip(names, results, strict=True))
        return changed

    async def _check(self, name: str) -> Result:
        return await run_check(self.services[name].check, self.timeout, f"{name} check")

    def report(self) -> list[dict[str, Any]]:
        """The `services` field of a challenge-response."""
        return [
            {"name": n, "healthy": ok, "reason": None if ok else reason}
            for n, (ok, reason) in self.results.items()
        ]

    def verdict(self) -> Result:
        """Healthy when every service is; else a reason naming the unhealthy ones."""
        bad = [(n, r) for n, (ok, r) in self.results.items() if not ok]
        if not bad:
            return True, None
        text = "; ".join(f"{n}: {r}" if r else n for n, r in bad)
        return False, f"unhealthy service{'s' * (len(bad) > 1)}: {text}"[:MAX_REASON]

    async def restart(self, name: str, timeout: float) -> Result:
        """Run the service's restart command, then check it again at once (so the next
        answer tells the host whether the restart helped)."""
        service = self.services.get(name)
        if service is None:
            return False, f"no service named {name!r}"
        if service.restart is None:
            return False, f"service {name} has no restart command"
        if name in self._restarting:
            return False, f"a restart of {name} is already running"
        self._restarting.add(name)
        try:
            limit = min(max(timeout, 0.001), MAX_RESTART_TIMEOUT)
            ok, reason = await run_check(service.restart, limit, f"{name} restart")
            if ok:
                self.restarts[name] += 1
            self.results[name] = await self._check(name)
            return ok, reason
        finally:
            self._restarting.discard(name)


def command_check(cmd: str, timeout: float = 1.0, what: str = "health command") -> Health:
    """A check that runs `cmd` in a shell: exit status 0 is ok; otherwise the reason
    carries the exit code and the first line of its stderr."""

    async def check() -> Result:
        proc = await asyncio.create_subprocess_shell(
            cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills its children too
        )
        try:
            async with asyncio.timeout(timeout):
                _, err = await proc.communicate()
        except TimeoutError:
            await kill_group(proc)
            return False, f"{what} timed out after {timeout:g} s"
        except BaseException:
            await kill_group(proc)
            raise
        if proc.returncode == 0:
            return True, None
        code = proc.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        first = next(
            (ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()), ""
        )
        return False, (f"{what} failed ({how})" + (f": {first}" if first else ""))[:MAX_REASON]

    return check


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())
