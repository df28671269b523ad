"""Command line of the guest agent: `python -m opendoctor.heartbeat.cli` (`opendoctor guest-agent`).

Plain argparse, standard library only: it runs inside small VMs and must start fast.
SIGTERM and SIGINT send `exit` first, so a stopped agent is not mistaken for a fault.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from opendoctor.heartbeat.agent import GuestAgent, command_health
from opendoctor.heartbeat.services import Service, command_check
from opendoctor.infra.procs import announce_ready
from opendoctor.wire import heartbeat as p


def _named(text: str) -> tuple[str, str]:
    """`NAME=CMD` of --service and --service-restart."""
    name, sep, cmd = text.partition("=")
    if not sep or not cmd.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    if not (0 < len(name) <= p.MAX_SERVICE_NAME and p.SERVICE_CHARS.issuperset(name)):
        raise argparse.ArgumentTypeError(
            f"service name {name!r}: 1-{p.MAX_SERVICE_NAME} letters, digits, '.', '_', '-', '@'"
        )
    return name, cmd


def _services(args: argparse.Namespace) -> list[Service]:
    restarts = dict(args.service_restart)
    timeout = args.health_timeout
    return [
        Service(
            name,
            command_check(cmd, timeout),
            # The host gives each restart its own timeout; the command has the longest.
            command_check(restarts[name], 600.0, "restart command") if name in restarts else None,
        )
        for name, cmd in args.service
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="opendoctor guest-agent",
        description="Answer the host's guest heartbeat challenges from inside a VM.",
    )
    parser.add_argument(
        "--channel",
        required=True,
        help="Unix socket path, character device path (virtio-serial port) or tcp:HOST:PORT",
    )
    parser.add_argument("--instance-id", required=True, help="this VM's instance ID")
    parser.add_argument("--health-cmd", help="shell command; exit status 0 means healthy")
    parser.add_argument(
        "--health-timeout", type=float, default=1.0, help="seconds before a check counts as failed"
    )
    parser.add_argument(
        "--health-interval-ms", type=int, help="pause between checks (default: interval / 2)"
    )
    parser.add_argument("--interval-ms", type=int, default=100, help="proposed challenge interval")
    parser.add_argument("--timeout-ms", type=int, default=80, help="proposed response timeout")
    parser.add_argument("--ready-file", type=Path, help="written once the host has acknowledged")
    for flag, what in [
        ("--service", "a named service and its health command (repeatable)"),
        ("--service-restart", "the command that restarts a named service (run when asked)"),
    ]:
        parser.add_argument(
            flag, type=_named, action="append", default=[], metavar="NAME=CMD", help=what
        )
    parser.add_argument(
        "--app-socket", help="Unix socket for applications (server-group messaging)"
    )
    parser.add_argument(
        "--app-socket-mode",
        choices=("0600", "0660"),
        default="0600",
        help="0660 lets the socket's group use it too",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.interval_ms < 0 or args.timeout_ms < 0 or args.health_timeout <= 0:
        parser.error("timings must be positive (0 ms: let the host choose)")
    names = [name for name, _ in args.service]
    if len(set(names)) != len(names) or len(names) > p.MAX_SERVICES:
        parser.error(f"each --service needs its own name, at most {p.MAX_SERVICES} of them")
    unknown = {name for name, _ in args.service_restart} - set(names)
    if unknown:
        parser.error(f"--service-restart for services without --service: {', '.join(unknown)}")
    return args


async def _announce(agent: GuestAgent, ready_file: Path) -> None:
    await agent.registered.wait()
    announce_ready(ready_file, f"{agent.instance_id}\n")


async def _run(args: argparse.Namespace) -> None:
    health = None
    if args.health_cmd:
        health = command_health(args.health_cmd, args.health_timeout)
    agent = GuestAgent(
        args.channel,
        args.instance_id,
        health,
        interval_ms=args.interval_ms,
        timeout_ms=args.timeout_ms,
        health_interval_ms=args.health_interval_ms,
        # The command's own timeout should win: its message says more than ours.
        health_timeout=args.health_timeout + 0.5,
        services=_services(args),
        app_socket=args.app_socket,
        app_socket_mode=int(args.app_socket_mode, 8),
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.append(loop.create_task(agent.stop())))
    announce = asyncio.create_task(_announce(agent, args.ready_file)) if args.ready_file else None
    try:
        await agent.run()
        for task in stopping:
            await task
    finally:
        if announce is not None:
            announce.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announce


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s guest-agent[{args.instance_id}] %(message)s",
    )
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
