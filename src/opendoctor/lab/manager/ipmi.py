"""The lab's baseboard management controllers over IPMI (RMCP+, `ipmitool -I lanplus`).

Beside the Redfish service (`redfish.py`) every lab host has an IPMI BMC of its own, as
real hosts do: a UDP port on the manager's address, chosen free at start and reported in
`lab.json` (`ipmi`) and by `GET /ipmi`. Chassis power status is whether the host's
process runs; chassis power off kills it and power on starts it, as `fail-host` and
`restore-host` do (the fault is recorded as `bmc-power-off`, as Redfish's ForceOff is).
Same account as the Redfish BMC (`BmcAccount`).

pyghmi's BMC server (`ipmi_server.py`) is written for a blocking loop of its own: the
BMCs run on a thread of their own (pyghmi adds its I/O thread), and every power
operation is handed to the manager's asyncio loop, which alone touches the `Lab`. So
the loop never waits on IPMI, and a stop ends both threads and closes the sockets.

IPMI's RAKP hands a salted HMAC of the password to whoever names a valid user: a BMC
belongs on a management network, here loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opendoctor.lab.manager.records import LabError
from opendoctor.lab.manager.redfish import BmcAccount
from opendoctor.lab.manager.state import Lab
from opendoctor.lab.manager.webutil import json_response

if TYPE_CHECKING:
    from opendoctor.lab.manager.ipmi_server import HostBmc

log = logging.getLogger("opendoctor.lab.manager")

# Seconds the BMC thread waits for packets before it looks at `stop` again; it also bounds
# the delay of a packet whose wake-up pyghmi misses (its check and its wait are not atomic).
POLL = 0.05
# A real BMC accepts a power command at once and the power follows. An operation done
# within this answers with its result; a longer one (a host boots) is answered accepted,
# before the client's first retry (pyghmi's is 0.5-1 s, ipmitool's 1 s), and carries on.
ANSWER_WITHIN = 0.3
STATE_TIMEOUT = 5.0  # seconds for the loop to read a host's power
# IPMI completion codes (IPMI 2.0 table 5-2).
OK, FAILED = 0x00, 0xFF


class IpmiBmcs:
    """An IPMI BMC per lab host on `address` (UDP), the thread that serves them, and
    the power operations they hand to the manager's loop."""

    def __init__(self, lab: Lab, account: BmcAccount, address: str = "127.0.0.1") -> None:
        self.lab = lab
        self.account = account
        self.address = address
        self.bmcs: dict[str, HostBmc] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # One power operation at a time per host: a client's retry must not start a
        # second boot of a host that is booting.
        self._locks = {name: asyncio.Lock() for name in lab.hosts}

    @property
    def addresses(self) -> dict[str, str]:
        """Each host's BMC as `host:port`, the form of a fence device's `address`."""
        return {name: f"{self.address}:{b.port}" for name, b in self.bmcs.items()}

    async def start(self) -> None:
        """Bind a port per host and serve; without pyghmi, log why and serve nothing."""
        try:
            from opendoctor.lab.manager import ipmi_server
        except ImportError:
            log.warning("no IPMI BMCs: pyghmi is missing (pip install 'opendoctor[fencing]')")
            return
        self._loop = asyncio.get_running_loop()
        # Binding starts pyghmi's I/O thread and waits for it: not on the loop.
        await asyncio.to_thread(self._bind, ipmi_server.HostBmc)
        self._thread = threading.Thread(
            target=self._serve, args=(ipmi_server.serve_once,), name="lab-ipmi", daemon=True
        )
        self._thread.start()
        log.info("IPMI BMCs: %s", ", ".join(f"{h} {a}" for h, a in self.addresses.items()))

    def _bind(self, bmc: type[HostBmc]) -> None:
        for name in self.lab.hosts:
            self.bmcs[name] = bmc(self, name, self.address)

    def _serve(self, serve_once: Callable[[float], None]) -> None:
        while not self._stop.is_set():
            try:
                serve_once(POLL)
            except Exception:
                # A malformed packet must not end every host's BMC.
                log.exception("IPMI BMC: a packet failed")

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is None:
            return
        # Off the loop: the BMC thread may be waiting on the loop for a power operation.
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        from opendoctor.lab.manager import ipmi_server

        await asyncio.to_thread(ipmi_server.shutdown, list(self.bmcs.values()))
        self.bmcs.clear()

    # ----- power, on the manager's loop ---------------------------------------------------

    def power_state(self, host: str) -> str:
        """`on` or `off`, from the BMC thread."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._is_on(host), self._loop)
        # A loop this late is stuck: pyghmi answers the exception with completion code 0xFF.
        return "on" if future.result(timeout=STATE_TIMEOUT) else "off"

    def command(self, host: str, operation: Callable[[str], Coroutine[Any, Any, int]]) -> int:
        """Run a power operation on the loop, from the BMC thread: its completion code if
        it ends within `ANSWER_WITHIN`, else OK (accepted: it goes on)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(operation(host), self._loop)
        try:
            return future.result(timeout=ANSWER_WITHIN)
        except concurrent.futures.TimeoutError:
            future.add_done_callback(functools.partial(_log_late, host))
            return OK

    async def _is_on(self, host: str) -> bool:
        return self.lab.host(host).alive

    async def off(self, host: str) -> int:
        async with self._locks[host]:
            return await self._power(host, on=False)

    async def on(self, host: str) -> int:
        async with self._locks[host]:
            return await self._power(host, on=True)

    async def reset(self, host: str) -> int:
        async with self._locks[host]:
            code = await self._power(host, on=False)
            return code if code != OK else await self._power(host, on=True)

    async def _power(self, host: str, on: bool) -> int:
        """Power the host on or off, as Redfish's Reset does; a host already so is OK."""
        record = self.lab.host(host)
        try:
            if on and not record.alive:
                await self.lab.restore_host(host)
            elif not on and record.alive:
                await self.lab.fail_host(host, kind="bmc-power-off")
        except LabError as exc:
            log.warning("IPMI BMC of %s: power %s failed: %s", host, "on" if on else "off", exc)
            return FAILED
        return OK


def _log_late(host: str, future: concurrent.futures.Future[int]) -> None:
    # Answered as accepted, so nobody else hears of its failure.
    if future.cancelled():
        return
    failure = future.exception()
    if failure is not None:
        log.error("IPMI BMC of %s: a power operation failed: %r", host, failure)


IPMI_KEY = web.AppKey("ipmi_bmcs", IpmiBmcs)


async def ipmi_addresses(request: web.Request) -> web.Response:
    """`GET /ipmi`: each host's IPMI BMC, `{"compute1": "127.0.0.1:40623", ...}`."""
    return json_response(request.app[IPMI_KEY].addresses)


def ipmi_routes() -> list[web.RouteDef]:
    return [web.get("/ipmi", ipmi_addresses)]
