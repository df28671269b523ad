"""The lab manager: `python -m opendoctor.lab.manager --state-dir DIR [spec options]`.

Starts the hosts and VMs of the spec, writes `DIR/lab.json` once every VM serves,
serves the lab API until SIGTERM/SIGINT, then takes every host down and removes
`lab.json`. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from opendoctor.infra.procs import pid_alive
from opendoctor.lab.manager.api import build_app
from opendoctor.lab.manager.hostctl import HostCallError
from opendoctor.lab.manager.ipmi import IPMI_KEY, IpmiBmcs, ipmi_routes
from opendoctor.lab.manager.records import LabError
from opendoctor.lab.manager.redfish import BmcAccount
from opendoctor.lab.manager.state import Lab
from opendoctor.lab.spec import LabSpec, add_spec_arguments, spec_from_args
from opendoctor.lab.statefile import read_state, remove_state, write_state

log = logging.getLogger("opendoctor.lab.manager")


async def _serve(lab: Lab, state_dir: Path, stop: asyncio.Event) -> None:
    spec = lab.spec
    started = time.monotonic()
    await lab.boot()
    bmc = BmcAccount.load_or_make(state_dir)
    # Each host's IPMI BMC beside the Redfish service, with the same account.
    ipmi = IpmiBmcs(lab, bmc, spec.api_host)
    app = build_app(lab, bmc)
    app[IPMI_KEY] = ipmi
    app.add_routes(ipmi_routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await ipmi.start()
        site = web.TCPSite(runner, spec.api_host, spec.api_port)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://{spec.api_host}:{port}"
        write_state(
            state_dir,
            {
                "url": url, "pid": os.getpid(), "spec": spec.to_dict(), "started": time.time(),
                "ipmi": ipmi.addresses,
            },
        )  # fmt: skip
        log.info(
            "lab ready at %s: %d hosts, %d VMs (%s mode) in %.2f s",
            url, spec.hosts, len(lab.servers), spec.vm_mode, time.monotonic() - started,
        )  # fmt: skip
        await stop.wait()
    finally:
        remove_state(state_dir, os.getpid())
        await ipmi.stop()
        await runner.cleanup()


async def run(spec: LabSpec, state_dir: Path) -> int:
    existing = read_state(state_dir)
    if existing is not None and isinstance(existing.get("pid"), int) and pid_alive(existing["pid"]):
        log.error("a lab is already running from %s (pid %s)", state_dir, existing["pid"])
        return 1
    lab = Lab(spec, state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(_serve(lab, state_dir, stop))
    stopping = asyncio.create_task(stop.wait())
    try:
        # A signal during start-up must not wait for every VM to come up first.
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return 0
    except (HostCallError, LabError, OSError) as exc:
        log.error("lab failed: %s", exc)
        return 1
    finally:
        stopping.cancel()
        remove_state(state_dir, os.getpid())
        await lab.shutdown()
        log.info("lab stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a lab: hosts, VMs and the lab API.")
    parser.add_argument("--state-dir", type=Path, required=True, help="where lab.json goes")
    add_spec_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    args.state_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(spec, args.state_dir))


if __name__ == "__main__":
    sys.exit(main())
