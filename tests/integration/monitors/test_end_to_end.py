"""Each monitor's fault reaches the owners of the host's servers, and its end clears the
fault: a real Alertmanager (alerts posted to its API, as Prometheus posts them), a
real collectd (notifications dispatched through its socket, as its plugins dispatch
them; values crossing thresholds), Doctor events published to RabbitMQ, and the body of
Zabbix's webhook media type (docs/monitors.md)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from opendoctor.tools.monitor_stack import MonitorStack
from opendoctor.tools.stack import wait_for

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


async def _events_of(stack: MonitorStack, fault_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The events of a fault, once `count` of them are marked handled with it."""

    async def kept() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = await stack.stack.get("/v1/events?limit=100")
        mine = [e for e in events if e["fault_id"] == fault_id]
        return mine if len(mine) >= count else None

    return await wait_for(f"{count} event(s) of fault {fault_id}", kept, 10)


async def _told_once(
    stack: MonitorStack, host: str, since: float, servers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    notices = await stack.told(host, since, servers)
    # Each owner hears once about each of its servers, however many alerts came.
    assert sorted(n["instance_id"] for n in notices) == sorted(v["id"] for v in servers)
    for notice in notices:
        owner = next(v for v in servers if v["id"] == notice["instance_id"])
        assert notice["project_id"] == owner["project_id"]
        assert notice["host"] == host
    return notices


async def test_alertmanager_firing_tells_the_owners_and_resolved_clears(
    stack: MonitorStack,
) -> None:
    host = "compute1"
    await stack.rearm()
    servers = await stack.servers_on(host)
    assert len(servers) == 2
    sent = await stack.alertmanager_alert(host, firing=True)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert (event["reporter"], event["monitor"]) == ("alertmanager", "alertmanager")
    assert event["details"]["fields"]["alertname"] == "HostDown"
    assert len(event["monitor_event_id"]) == 16  # Alertmanager's fingerprint

    await stack.alertmanager_alert(host, firing=False)
    cleared = await stack.cleared(fault["id"])
    assert cleared["cleared"] >= fault["started"]


async def test_a_burst_of_grouped_alerts_about_one_host_is_one_fault(stack: MonitorStack) -> None:
    host = "compute1"
    await stack.rearm()
    servers = await stack.servers_on(host)
    labels = {"alertname": "HostDown", "instance": f"{host}:9100", "severity": "critical"}
    burst = [
        {"labels": dict(labels, job="node")},
        {"labels": dict(labels, job="blackbox")},
        {"labels": dict(labels, alertname="NodeDown")},
    ]
    sent = await stack.alertmanager.post(burst)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    faults = await stack.stack.get("/v1/faults?status=active")
    assert [f["id"] for f in faults if f["hostname"] == host] == [fault["id"]]

    events = await _events_of(stack, fault["id"], 3)
    assert len({e["monitor_event_id"] for e in events}) == 3

    # One alert resolves: the others still hold the host down. Alertmanager sends its
    # group again, the resolved alert with the one still firing (a fourth event).
    ended = {**burst[0], "endsAt": "2000-01-01T00:00:00Z"}
    await stack.alertmanager.post([ended])
    events = await _events_of(stack, fault["id"], 4)
    assert {e["status"] for e in events} == {"down"}
    assert (await stack.stack.get(f"/v1/faults/{fault['id']}"))["status"] == "active"

    await stack.alertmanager.post([{**alert, "endsAt": "2000-01-01T00:00:00Z"} for alert in burst])
    await stack.cleared(fault["id"])
    # And nobody was told twice.
    await _told_once(stack, host, sent, servers)


async def test_a_collectd_notification_tells_the_owners_and_okay_clears(
    stack: MonitorStack,
) -> None:
    host = "compute2"
    await stack.rearm()
    servers = await stack.servers_on(host)
    sent = await stack.collectd_notification(host, failing=True)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert (event["reporter"], event["monitor"]) == ("collectd", "collectd")
    assert event["details"]["summary"] == f"{host} does not answer pings"

    await stack.collectd_notification(host, failing=False)
    await stack.cleared(fault["id"])


async def test_collectds_threshold_plugin_opens_and_clears_a_fault(stack: MonitorStack) -> None:
    host = "compute2"
    await stack.rearm()
    servers = await stack.servers_on(host)
    # Half the pings lost, over the FailureMax of the tools' collectd configuration.
    sent = await stack.collectd.value(f"monitor1/ping/ping_droprate-{host}", 0.9)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert "above the failure threshold" in event["details"]["summary"]

    await stack.collectd.value(f"monitor1/ping/ping_droprate-{host}", 0.0)
    await stack.cleared(fault["id"])


async def test_collectd_values_crossing_opendoctors_threshold(stack: MonitorStack) -> None:
    host = "compute3"
    await stack.rearm()
    servers = await stack.servers_on(host)
    await stack.collectd.value(f"monitor1/ping/ping-{host}", 12.0)  # inside: nothing
    sent = await stack.collectd.value(f"monitor1/ping/ping-{host}", 900.0)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert event["monitor_event_id"].startswith("threshold0:")
    assert event["details"]["fields"]["value"] == "900.0"

    await stack.collectd.value(f"monitor1/ping/ping-{host}", 20.0)
    await stack.cleared(fault["id"])


async def test_doctor_events_from_the_queue(stack: MonitorStack) -> None:
    host = "compute3"
    await stack.rearm()
    servers = await stack.servers_on(host)
    assert stack.broker is not None
    # A message that can never be taken is set aside; the ones after it are taken.
    await stack.broker.publish(stack.exchange, "doctor.events", b'{"type": "compute.host.down"')
    bad = [{"type": "compute.host.down", "details": {"hostname": "nowhere", "status": "down"}}]
    await stack.broker.publish(stack.exchange, "doctor.events", orjson.dumps(bad))
    sent = await stack.queue_event(host, down=True)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert (event["reporter"], event["monitor"]) == ("queue", "publisher")

    await stack.queue_event(host, down=False)
    await stack.cleared(fault["id"])


async def test_the_zabbix_webhook_body(stack: MonitorStack) -> None:
    host = "compute1"
    await stack.rearm()
    servers = await stack.servers_on(host)
    problem = str(uuid.uuid4().int % 10**9)
    sent = await stack.zabbix_webhook(host, problem=True, event_id=problem)
    await _told_once(stack, host, sent, servers)
    fault = await stack.active_fault(host)
    [event] = await _events_of(stack, fault["id"])
    assert (event["reporter"], event["monitor"], event["monitor_event_id"]) == (
        "zabbix",
        "zabbix",
        problem,
    )
    assert event["details"]["fields"]["tags.scope"] == "availability"

    await stack.zabbix_webhook(host, problem=False, event_id=problem)
    await stack.cleared(fault["id"])
