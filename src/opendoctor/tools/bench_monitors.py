"""`opendoctor bench monitors`: from a monitor's send to the owners told, per tool.

On a lab of three hosts with two servers each (two projects, one consumer process
each), the service as its own process, a real Alertmanager and a real collectd sending
to it and a RabbitMQ queue it consumes (`tools.monitor_stack`). Each run makes a
host's fault the tool's way and times, from the tool's send (the alert posted to
Alertmanager's API, the notification or value handed to collectd's socket, the
message published, the Zabbix webhook's body posted), until the first and the last
owner of the host's servers had their callback; then it sends the fault's end and
times until the fault is cleared.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.tools.bench import summary
from opendoctor.tools.monitor_stack import MonitorStack, monitor_stack

HOSTS = ("compute1", "compute2", "compute3")
# Send a host's fault (True) or its end (False) the tool's way; when it was sent.
Send = Callable[[MonitorStack, str, bool], Awaitable[float]]


async def _alertmanager(ms: MonitorStack, host: str, down: bool) -> float:
    return await ms.alertmanager_alert(host, firing=down)


async def _collectd_notification(ms: MonitorStack, host: str, down: bool) -> float:
    return await ms.collectd_notification(host, failing=down)


async def _collectd_threshold(ms: MonitorStack, host: str, down: bool) -> float:
    # collectd's threshold plugin: ping_droprate over its FailureMax of 0.5.
    return await ms.collectd.value(f"monitor1/ping/ping_droprate-{host}", 0.9 if down else 0.0)


async def _collectd_values(ms: MonitorStack, host: str, down: bool) -> float:
    # opendoctor's own threshold on the values write_http posts: ping above 500 ms.
    return await ms.collectd.value(f"monitor1/ping/ping-{host}", 900.0 if down else 10.0)


async def _queue(ms: MonitorStack, host: str, down: bool) -> float:
    return await ms.queue_event(host, down=down)


_problems: dict[str, str] = {}


async def _zabbix(ms: MonitorStack, host: str, down: bool) -> float:
    if down:
        _problems[host] = str(uuid.uuid4().int % 10**9)
    return await ms.zabbix_webhook(host, problem=down, event_id=_problems[host])


ADAPTERS: dict[str, tuple[str, Send]] = {
    "alertmanager": ("Alertmanager webhook (group_wait 0s, group_interval 1s)", _alertmanager),
    "collectd": ("collectd notification (PUTNOTIF → write_http)", _collectd_notification),
    "collectd-threshold": (
        "collectd value → its threshold plugin → write_http",
        _collectd_threshold,
    ),
    "collectd-values": (
        "collectd values → opendoctor's threshold (FlushInterval 1s)",
        _collectd_values,
    ),
    "queue": ("Doctor event published to RabbitMQ", _queue),
    "zabbix": ("Zabbix media type's body posted", _zabbix),
}


async def one_adapter(ms: MonitorStack, send: Send, runs: int) -> dict[str, Any]:
    first: list[float] = []
    last: list[float] = []
    cleared: list[float] = []
    for run in range(runs):
        host = HOSTS[run % len(HOSTS)]
        await ms.rearm()
        servers = await ms.servers_on(host)
        sent = await send(ms, host, True)
        notices = await ms.told(host, sent, servers)
        arrived = sorted(n["arrived"] for n in notices)
        first.append(arrived[0] - sent)
        last.append(arrived[-1] - sent)
        fault = await ms.active_fault(host)
        ended = await send(ms, host, False)
        done = await ms.cleared(fault["id"])
        cleared.append(done["cleared"] - ended)
    return {
        "runs": runs,
        "send_to_first_told": _figures(first),
        "send_to_last_told": _figures(last),
        "end_to_cleared": _figures(cleared),
        "per_run_last_told": last,
    }


def _figures(values: list[float]) -> dict[str, float]:
    return {"min": min(values), **summary(values)} if values else {}


async def monitors(
    adapters: list[str],
    runs: int,
    amqp_url: str,
    console: Console,
    workdir: Path | None = None,
    ip_prefix: str = "127.142",
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="opendoctor-bench-monitors-") as tmp:
        where = workdir or Path(tmp)
        console.print(
            f"[dim]starting the lab, the service, Alertmanager and collectd in {where}[/dim]"
        )
        async with monitor_stack(where, ip_prefix, amqp_url) as ms:
            for name in adapters:
                label, send = ADAPTERS[name]
                console.print(f"[dim]{label}: {runs} runs[/dim]")
                results[name] = {"label": label, **await one_adapter(ms, send, runs)}
    return results


def _ms(figures: dict[str, float], key: str) -> str:
    return f"{figures[key] * 1000:.1f}" if key in figures else "—"


def table(console: Console, results: dict[str, Any]) -> None:
    out = Table(title="Monitor's send → owners told (ms), and the fault's end → cleared")
    out.add_column("monitor")
    out.add_column("runs", justify="right")
    for name in ("first told p50", "last told min", "p50", "p90", "max"):
        out.add_column(name, justify="right")
    out.add_column("cleared p50", justify="right")
    out.add_column("cleared max", justify="right")
    for result in results.values():
        first, last, cleared = (
            result["send_to_first_told"],
            result["send_to_last_told"],
            result["end_to_cleared"],
        )
        out.add_row(
            result["label"],
            str(result["runs"]),
            _ms(first, "p50"),
            _ms(last, "min"),
            _ms(last, "p50"),
            _ms(last, "p90"),
            _ms(last, "max"),
            _ms(cleared, "p50"),
            _ms(cleared, "max"),
        )
    console.print(out)
    console.print(
        "Alertmanager sends a new group's first alert after group_wait, but an alert of a "
        "group it still holds (the same host within its retention) at the group's next "
        "group_interval tick: the min is the former, the p50 mostly the latter."
    )
