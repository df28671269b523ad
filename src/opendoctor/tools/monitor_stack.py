"""A running stack fed by the monitors operators run: the lab, the service and the
owners' consumers (`tools.stack`), with a real Alertmanager and a real collectd
sending to the service, and a RabbitMQ queue it consumes Doctor events from.

The tests of `tests/integration/monitors/` and `opendoctor bench monitors` drive it:
each fault is sent the way its tool sends it, and the owners of the host's servers
are told through their own consumer processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from opendoctor.core.model import iso
from opendoctor.infra.amqp import AmqpError, Broker
from opendoctor.infra.procs import free_port
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.monitor_tools import Alertmanager, Collectd, secret_file
from opendoctor.tools.stack import Stack, running_stack, wait_for

PROJECTS = ["project-a", "project-b"]
# The monitors that post to the service over HTTP, each with a token of its own.
MONITORS = ("alertmanager", "collectd", "zabbix")
# The thresholds opendoctor checks collectd's values against (collectd's own threshold
# plugin watches ping_droprate): a ping slower than 500 ms is a host down.
THRESHOLDS = [
    {"match": {"plugin": "ping", "type": "ping"}, "above": 500, "host_field": "type_instance"}
]


def monitor_spec(ip_prefix: str) -> LabSpec:
    """Three hosts, two servers each (of two projects), served inline by their host."""
    return LabSpec(
        hosts=3, vms=6, projects=PROJECTS, vm_mode="inline", ip_prefix=ip_prefix, heartbeat=False
    )


@dataclass
class MonitorStack:
    stack: Stack
    alertmanager: Alertmanager
    collectd: Collectd
    tokens: dict[str, str]
    broker: Broker | None = None
    exchange: str = ""
    alarms: list[dict[str, Any]] = field(default_factory=list)

    async def servers_on(self, host: str) -> list[dict[str, Any]]:
        return [v for v in await self.stack.get("/v1/servers") if v["host"] == host]

    async def told(
        self, host: str, since: float, servers: list[dict[str, Any]], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The notices (state error) about each of `servers` that arrived after `since`,
        once every one of their owners has one."""
        wanted = {v["id"] for v in servers}

        async def heard() -> list[dict[str, Any]] | None:
            received = await self.stack.received()
            notices = [
                n
                for notes in received.values()
                for n in notes
                if n["instance_id"] in wanted and n["state"] == "error" and n["arrived"] >= since
            ]
            return notices if {n["instance_id"] for n in notices} >= wanted else None

        return await wait_for(f"the owners of {host}'s servers to be told", heard, timeout)

    async def active_fault(self, host: str, timeout: float = 15.0) -> dict[str, Any]:
        async def active() -> dict[str, Any] | None:
            faults = await self.stack.get("/v1/faults?status=active")
            return next((f for f in faults if f["hostname"] == host), None)

        return await wait_for(f"a fault of {host}", active, timeout)

    async def cleared(self, fault_id: str, timeout: float = 15.0) -> dict[str, Any]:
        async def gone() -> dict[str, Any] | None:
            fault: dict[str, Any] = await self.stack.get(
                f"/v1/faults/{fault_id}?notifications=false"
            )
            return fault if fault["status"] == "cleared" else None

        return await wait_for(f"fault {fault_id} to clear", gone, timeout)

    async def rearm(self) -> None:
        """The owners' alarms back to ok, so that the next fault fires them again."""
        await self.stack.rearm(self.alarms)

    # --- each tool's way of saying a host failed, and that it is back ----------------------

    async def alertmanager_alert(self, host: str, firing: bool, name: str = "HostDown") -> float:
        """What Prometheus posts: the alert (as node_exporter's `instance`), or its end."""
        alert: dict[str, Any] = {
            "labels": {"alertname": name, "instance": f"{host}:9100", "severity": "critical"},
            "annotations": {"summary": f"{host} does not answer"},
        }
        if not firing:
            alert["endsAt"] = iso(time.time()) + "Z"
        return await self.alertmanager.post([alert])

    async def collectd_notification(self, host: str, failing: bool) -> float:
        """What collectd's ping plugin would dispatch about `host`."""
        severity = "failure" if failing else "okay"
        message = f"{host} does not answer pings" if failing else f"{host} answers again"
        return await self.collectd.notify(
            severity, "monitor1", message, plugin="ping", type="ping_droprate", type_instance=host
        )

    async def queue_event(self, host: str, down: bool) -> float:
        """A Doctor event, published as a monitor without HTTP does."""
        assert self.broker is not None, "no queue in this stack"
        event = {
            "time": iso(time.time()),
            "type": "compute.host.down",
            "details": {
                "hostname": host,
                "status": "down" if down else "up",
                "monitor": "publisher",
                "monitor_event_id": str(uuid.uuid4()),
            },
        }
        sent = time.time()
        await self.broker.publish(self.exchange, "doctor.events", orjson.dumps([event]))
        return sent

    async def zabbix_webhook(self, host: str, problem: bool, event_id: str) -> float:
        """The body Zabbix's media type script posts (docs/monitors.md), posted as it does."""
        body = {
            "event_id": event_id,
            "event_value": "1" if problem else "0",
            "event_source": "0",
            "event_update_status": "0",
            "host": host,
            "event_name": "Unavailable by ICMP ping",
            "severity": "High",
            "event_tags": json.dumps([{"tag": "scope", "value": "availability"}]),
            "sent_at": str(time.time()),
        }
        sent = time.time()
        headers = {"X-Auth-Token": self.tokens["zabbix"]}
        resp = await self.stack.http.post(
            self.stack.api + "/v1/monitors/zabbix", json=body, headers=headers
        )
        if resp.status != 202:
            raise RuntimeError(f"the Zabbix webhook got {resp.status}: {resp.body!r}")
        return sent


def service_env(
    tokens_file: Path, queue: str | None, exchange: str, amqp_url: str
) -> dict[str, str]:
    env = {
        # Faults come from the monitors here: no prober, and nothing fenced or evacuated
        # (a host reported down is still running; its fault clears when it is reported up).
        "OPENDOCTOR_MONITOR__ENABLED": "false",
        "OPENDOCTOR_RECOVERY__ENABLED": "false",
        "OPENDOCTOR_API__MONITOR_TOKENS_FILE": str(tokens_file),
        "OPENDOCTOR_MONITORS__COLLECTD__THRESHOLDS": json.dumps(THRESHOLDS),
    }
    if queue is not None:
        env |= {
            "OPENDOCTOR_MONITORS__QUEUE__ENABLED": "true",
            "OPENDOCTOR_MONITORS__QUEUE__URL": amqp_url,
            "OPENDOCTOR_MONITORS__QUEUE__QUEUE": queue,
            "OPENDOCTOR_MONITORS__QUEUE__EXCHANGE": exchange,
        }
    return env


@contextlib.asynccontextmanager
async def monitor_stack(
    workdir: Path,
    ip_prefix: str,
    amqp_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[MonitorStack]:
    """The stack, Alertmanager and collectd sending to it, and (with `amqp_url`) a queue
    of its own it consumes; one alarm per server, by its owner."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    tokens = {name: secrets.token_urlsafe(24) for name in MONITORS}
    lines = "".join(f"{name} {token}\n" for name, token in tokens.items())
    tokens_file = secret_file(workdir / "monitor-tokens", lines)
    tag = f"opendoctor-monitors-{uuid.uuid4().hex[:8]}"
    queue = f"{tag}.events" if amqp_url else None
    env = service_env(tokens_file, queue, tag, amqp_url or "") | (extra_env or {})
    broker = Broker(amqp_url, name="monitor-stack") if amqp_url else None
    async with running_stack(monitor_spec(ip_prefix), workdir, env) as s:
        alertmanager = Alertmanager(
            workdir / "alertmanager",
            s.api + "/v1/monitors/alertmanager",
            tokens["alertmanager"],
            f"127.0.0.1:{free_port()}",
        )
        collectd = Collectd(
            workdir / "collectd", s.api + "/v1/monitors/collectd", tokens["collectd"]
        )
        ms = MonitorStack(s, alertmanager, collectd, tokens, broker, tag)
        try:
            await asyncio.gather(alertmanager.start(), collectd.start())
            ms.alarms = await s.register_alarms()
            if broker is not None:
                await broker.connect()
                await _consuming(queue or "", broker)
            yield ms
        finally:
            await alertmanager.stop()
            await collectd.stop()
            if broker is not None:
                with contextlib.suppress(Exception):
                    await broker.delete_queue(queue or "")
                    await broker.delete_exchange(tag)
                await broker.close()


async def _consuming(queue: str, broker: Broker) -> None:
    """Wait until the service consumes the queue (it declares it at start)."""

    async def consumed() -> bool:
        try:
            return (await broker.inspect_queue(queue)).consumers > 0
        except AmqpError:
            return False

    await wait_for(f"the service to consume {queue}", consumed, 15.0)
