"""The sample VNF manager: one project's application manager taking part in planned
maintenance, as Doctor's sample app manager did through Fenix's API.

On start it subscribes to its project's `maintenance.scheduled` notices (an Aodh event
alarm whose action is `/maintenance` here), optionally with its instance group's and
instances' constraints. Each notice is answered 200 at once and handled in the
background (`opendoctor.tools.vnfm_manager`): it tells its instances, scales in, switches
a pair over before its active is moved, says how each instance is to be moved, and scales
back out when the maintenance is over. `GET /status` tells what it did; `PUT /pairs`
(`{"active", "standby"}`) names a pair after it started.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from opendoctor.infra.procs import announce_ready, until_signalled
from opendoctor.lab.client import LabClient, LabError
from opendoctor.tools.consumer import parse_pairs
from opendoctor.tools.vnfm_api import VnfmConfig, VnfmError
from opendoctor.tools.vnfm_manager import VnfManager
from opendoctor.tools.vnfm_notice import ACTIONS, STATES, NoticeError, parse_notice

MAX_BODY = 64 * 1024  # a notice is well under 2 KiB; more is not one
MANAGER: web.AppKey[VnfManager] = web.AppKey("manager", VnfManager)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _notice(request: web.Request) -> web.Response:
    received = time.time()
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"a maintenance notice is at most {MAX_BODY} bytes")
    request_id = request.headers.get("x-openstack-request-id", "")
    try:
        notice = parse_notice(orjson.loads(data), received, request_id)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"the callback body is not JSON: {exc}")
    except NoticeError as exc:
        return _error(400, str(exc))
    if not request.app[MANAGER].accept(notice):
        return web.json_response({"duplicate": True})
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    status = request.app[MANAGER].status()
    return web.Response(body=orjson.dumps(status), content_type="application/json")


async def _set_pair(request: web.Request) -> web.Response:
    switcher = request.app[MANAGER].switcher
    if switcher is None:
        return _error(409, "start the VNF manager with --lab-url to switch pairs over")
    try:
        body = orjson.loads(await request.read())
        active, standby = str(body["active"]), str(body["standby"])
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, f"expected {{active, standby}}: {exc}")
    switcher.set_pair(active, standby)
    return web.json_response({"pairs": switcher.pairs})


def make_app(manager: VnfManager) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[MANAGER] = manager
    app.router.add_post("/maintenance", _notice)
    app.router.add_get("/status", _status)
    app.router.add_put("/pairs", _set_pair)
    return app


def make_config(
    api: str,
    project: str,
    *,
    migration_type: str = "MIGRATE",
    nack: list[str] | None = None,
    **options: Any,
) -> VnfmConfig:
    """The configuration from command-line options; SystemExit saying what is wrong."""
    if migration_type not in ACTIONS:
        raise SystemExit(f"--migration-type takes one of {', '.join(ACTIONS)}")
    refused = frozenset(nack or [])
    if refused - set(STATES):
        raise SystemExit(f"--nack takes one of {', '.join(STATES)}")
    return VnfmConfig(api, project, migration_type=migration_type, nack=refused, **options)


async def serve(
    host: str,
    port: int,
    ready_file: Path | None,
    config: VnfmConfig,
    lab_url: str | None = None,
    pairs: dict[str, str] | None = None,
) -> None:
    if pairs and not lab_url:
        raise SystemExit("vnfm: --pair needs --lab-url (the pair is switched through the lab)")
    manager = VnfManager(config, LabClient(lab_url) if lab_url else None, pairs)
    runner = web.AppRunner(make_app(manager), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        url = f"http://{host}:{sockets[0].getsockname()[1] if sockets else port}"
        try:
            await manager.start(url + "/maintenance")
        except (VnfmError, LabError) as exc:
            raise SystemExit(f"vnfm: cannot take part in maintenance: {exc}") from None
        if not config.quiet:
            print(
                f"vnfm of {config.project} listening on {url} (notices on {url}/maintenance, "
                f"alarm {manager.alarm_id})",
                flush=True,
            )
        announce_ready(ready_file, url)
        await until_signalled()
    finally:
        # Callbacks stop first, so none arrives at a manager that is closing.
        await runner.cleanup()
        await manager.close()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="opendoctor-vnfm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--api", required=True, help="opendoctor's API URL")
    parser.add_argument("--project", required=True)
    parser.add_argument("--lab-url")
    parser.add_argument("--pair", action="append", default=[], help="ACTIVE_ID=STANDBY_ID")
    parser.add_argument("--group-id")
    parser.add_argument("--migration-type", default="MIGRATE", choices=ACTIONS)
    parser.add_argument("--nack", action="append", default=[], choices=STATES)
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--constraints", action="store_true")
    parser.add_argument("--recovery-time", type=int, default=0)
    parser.add_argument("--lead-time", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    config = make_config(
        args.api,
        args.project,
        migration_type=args.migration_type,
        nack=args.nack,
        silent=args.silent,
        constraints=args.constraints,
        group_id=args.group_id,
        recovery_time=args.recovery_time,
        lead_time=args.lead_time,
        quiet=args.quiet,
    )
    pairs = parse_pairs(args.pair)
    asyncio.run(serve(args.host, args.port, args.ready_file, config, args.lab_url, pairs))


if __name__ == "__main__":
    main(sys.argv[1:])
