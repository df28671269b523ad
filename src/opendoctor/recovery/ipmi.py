"""A fence device that is an IPMI BMC over LAN (RMCP+, what `ipmitool -I lanplus`
speaks), through pyghmi: the one module of the service that imports it.

pyghmi is synchronous: each call runs on a worker thread, so the event loop never waits
on a BMC, and one call at a time per device (pyghmi's session is not for concurrent
commands). The session is made on first use, so that a BMC that does not answer at start
does not stop the service. What a BMC refuses or fails is a `FenceError` that names the
host and never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from opendoctor.core.ports import FenceError
from opendoctor.core.recovery_settings import FenceDeviceSettings

T = TypeVar("T")
log = logging.getLogger(__name__)
LOGOUT_TIMEOUT = 2.0  # seconds `close` waits for a BMC to take the logout


def _no_wait_for_queued_answers() -> None:
    """Make pyghmi's client look at the answers already queued for it before it waits.

    pyghmi's client sends a request, then waits to be woken by its I/O thread, then reads
    its session's queue. An answer that comes before the wait begins (a BMC answering in
    well under a millisecond, as the lab's do) is queued and the wake-up is spent: it is
    read only when the wait times out, 0.5-1 s later (measured on the lab: 1 to 4 requests
    in 300). So a wait for a session whose queue holds a packet returns at once; the
    caller reads the queue next, as after any wake-up. Waits of other kinds are left be.
    """
    from pyghmi.ipmi.private import session

    original = session._io_wait
    if getattr(original, "opendoctor_checks_queue", False):
        return

    def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        if myaddr is not None and evq is None:
            handlers = session.Session.bmc_handlers.get(myaddr, {})
            if any(h.pktqueue for h in list(handlers.values())):
                return
        original(timeout, myaddr, evq)

    io_wait.opendoctor_checks_queue = True  # type: ignore[attr-defined]
    session._io_wait = io_wait


class IpmiDevice:
    """The IPMI BMC of `host`, by its settings (`recovery.fencing.devices`, driver ipmi)."""

    def __init__(self, host: str, settings: FenceDeviceSettings) -> None:
        self.host = host
        self.settings = settings
        self._command: Any = None
        self._lock = asyncio.Lock()
        # pyghmi takes about 0.1 s to import (its OEM handlers): at start, not in the
        # first fence. Missing, it is a FenceError at first use.
        with contextlib.suppress(ImportError):
            import pyghmi.ipmi.command  # noqa: F401

    def _connect(self) -> Any:
        try:
            from pyghmi.ipmi import command
        except ImportError as exc:
            raise FenceError("IPMI fencing needs: pip install 'opendoctor[fencing]'") from exc
        _no_wait_for_queued_answers()
        s = self.settings
        bmc, port = s.ipmi_endpoint
        # Logs in (RMCP+) now: a wrong account fails here, before any command.
        return command.Command(
            bmc=bmc, userid=s.username, password=s.password.get_secret_value(), port=port
        )

    def _error(self, exc: BaseException) -> FenceError:
        # pyghmi's messages say what failed ("Incorrect password provided", a completion
        # code); none should hold the password, and it is cut out should one ever do.
        said = str(exc) if str(exc) not in ("", "None") else "no answer"
        secret = self.settings.password.get_secret_value()
        if secret:
            said = said.replace(secret, "***")
        return FenceError(f"the IPMI BMC of {self.host} ({self.settings.address}): {said}")

    async def _call(self, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            reused = self._command is not None and not self._command.ipmi_session.broken
            if not reused:
                self._command = self._connect()
            try:
                return fn(self._command)
            except Exception:
                if not reused:
                    raise
                # BMCs drop sessions left idle (about a minute): one more go on a new one.
                self._command = self._connect()
                return fn(self._command)

        async with self._lock:
            try:
                return await asyncio.to_thread(run)
            except FenceError:
                raise
            except Exception as exc:
                # Any failure of pyghmi (IpmiException, OSError for an unknown name, or
                # a BMC's malformed answer) is the BMC's: the host may still be running.
                self._command = None
                raise self._error(exc) from exc

    async def power_state(self) -> str:
        def read(cmd: Any) -> str:
            return str(cmd.get_power().get("powerstate", "")).lower()

        state = await self._call(read)
        return state if state in ("on", "off") else "unknown"

    async def power_off(self) -> None:
        # "off": chassis control power down, at once (not "shutdown", which asks the OS).
        await self._call(lambda cmd: cmd.set_power("off"))

    async def power_on(self) -> None:
        await self._call(lambda cmd: cmd.set_power("on"))

    async def close(self) -> None:
        command, self._command = self._command, None
        if command is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(command.ipmi_session.logout), LOGOUT_TIMEOUT)
        except Exception as exc:
            # The session ends on the BMC's side anyway, when it has been idle long enough.
            log.debug("IPMI logout failed", extra={"host": self.host, "error": type(exc).__name__})
