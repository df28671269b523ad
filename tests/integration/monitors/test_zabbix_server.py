"""Against a real Zabbix server and its frontend's API (`zabbix_bed`): opendoctor reads a
host's problems through the API on demand, and Zabbix itself runs the webhook media
type of docs/monitors.md (its script, as written there) when a trigger fires and
recovers. Problems are made as Zabbix makes them: a trapper item's value (sent with
zabbix-utils' sender) sets off a trigger."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from zabbix_utils import Sender, ZabbixAPI

from tests.conftest import MONITOR, MONITOR_TOKEN, eventually
from tests.integration.monitors.zabbix_bed import ADMIN, ZabbixBed, zabbix_bed
from tests.live import live_api

pytestmark = [pytest.mark.zabbix, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DOCS = Path(__file__).parents[3] / "docs" / "monitors.md"
TRIGGER = "Unavailable by ICMP ping"
OPERATOR = {"X-Project-Id": "admin", "X-Roles": "admin"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ZabbixBed]:
    async with zabbix_bed(tmp_path_factory.mktemp("zabbix")) as bed:
        yield bed


@pytest.fixture(scope="module")
def zabbix(bed: ZabbixBed) -> Iterator[ZabbixAPI]:
    api = ZabbixAPI(url=bed.api_url, user=ADMIN[0], password=ADMIN[1])
    yield api
    api.logout()


@pytest.fixture(scope="module")
def service(bed: ZabbixBed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service (in-memory VIM: compute1..3) on a real port, reading this Zabbix."""
    zabbix = {"monitors": ["tests"], "api": {"url": bed.api_url, "user": ADMIN[0]}}
    zabbix["api"]["password"] = ADMIN[1]
    with live_api(
        tmp_path_factory.mktemp("service"),
        monitors={"zabbix": zabbix},
        recovery={"enabled": False},
    ) as url:
        yield url


def _host(api: ZabbixAPI, name: str) -> str:
    """A Zabbix host with a trapper item `up` and the ICMP template's trigger on it."""
    group = api.hostgroup.get(filter={"name": ["opendoctor"]}) or [
        {"groupid": api.hostgroup.create(name="opendoctor")["groupids"][0]}
    ]
    hostid: str = api.host.create(host=name, groups=[{"groupid": group[0]["groupid"]}])["hostids"][
        0
    ]
    api.item.create(hostid=hostid, name="up", key_="up", type=2, value_type=3)
    api.trigger.create(
        description=TRIGGER,
        expression=f"last(/{name}/up)=0",
        priority=4,
        tags=[{"tag": "scope", "value": "availability"}],
    )
    return hostid


def _set(bed: ZabbixBed, api: ZabbixAPI, host: str, up: bool) -> float:
    """Send the host's item `up` until Zabbix has (or no longer has) the problem: its
    configuration cache takes up a new host, item and trigger within a second, perhaps
    not all at once. When the first value Zabbix took was sent: the problem may come from
    it, shown only after a later one was sent, never from one sent before it."""
    sender = Sender(server=bed.trapper[0], port=bed.trapper[1])
    hostid = api.host.get(filter={"host": [host]})[0]["hostid"]
    deadline = time.monotonic() + 15
    first: float | None = None
    while True:
        sent = time.time()
        if sender.send_value(host, "up", int(up)).processed == 1 and first is None:
            first = sent
        if first is not None and bool(api.problem.get(hostids=[hostid])) != up:
            return first
        assert time.monotonic() < deadline, f"Zabbix did not take {host}'s value {int(up)}"
        time.sleep(0.1)


async def _active(client: httpx.AsyncClient, host: str) -> dict[str, Any] | None:
    faults = (await client.get("/v1/faults?status=active", headers=OPERATOR)).json()
    return next((f for f in faults if f["hostname"] == host), None)


async def _cleared(client: httpx.AsyncClient, fault_id: str) -> bool:
    fault = (await client.get(f"/v1/faults/{fault_id}", headers=OPERATOR)).json()
    return bool(fault["status"] == "cleared")


async def test_problems_read_from_the_zabbix_api(
    bed: ZabbixBed, zabbix: ZabbixAPI, service: str
) -> None:
    await asyncio.to_thread(_host, zabbix, "compute1")
    async with httpx.AsyncClient(base_url=service, headers=MONITOR) as client:
        sync = "/v1/monitors/zabbix/hosts/compute1/sync"
        resp = await client.post(sync)
        assert resp.status_code == 202 and resp.json()["problems"] == 0

        await asyncio.to_thread(_set, bed, zabbix, "compute1", False)
        resp = await client.post(sync)
        answer = resp.json()
        assert resp.status_code == 202 and answer["problems"] == 1, answer
        assert len(answer["accepted"]) == 1
        fault = await eventually(lambda: _active(client, "compute1"), 10, "the fault")
        assert fault["type"] == "compute.host.down"

        await asyncio.to_thread(_set, bed, zabbix, "compute1", True)
        resp = await client.post(sync)
        assert resp.json()["problems"] == 0 and len(resp.json()["accepted"]) == 1
        await eventually(lambda: _cleared(client, fault["id"]), 10, "the fault to clear")

        # A host opendoctor does not know; one Zabbix does not know.
        assert (await client.post("/v1/monitors/zabbix/hosts/nowhere/sync")).status_code == 404
        resp = await client.post("/v1/monitors/zabbix/hosts/compute3/sync")
        assert resp.status_code == 404
        assert "Zabbix has no host" in resp.json()["error"]["message"]


def _documented_media_type() -> tuple[str, list[dict[str, str]]]:
    """The script and the parameters docs/monitors.md gives for the media type."""
    text = DOCS.read_text()
    [script] = re.findall(r"```javascript\n(.*?)```", text, re.DOTALL)
    section = text.split("### The webhook media type", 1)[1].split("```javascript", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \|$", section, re.MULTILINE)
    return script, [{"name": name, "value": value} for name, value in rows]


def _webhook(api: ZabbixAPI, url: str) -> None:
    """The media type as documented, a user with it, an action sending through it on
    the trigger's problems. Made before the host: the server's configuration cache takes
    up the host no sooner than the action, so no problem of the host finds no action."""
    script, parameters = _documented_media_type()
    for p in parameters:
        if p["name"] == "opendoctor_url":
            p["value"] = url + "/v1/monitors/zabbix"
    api.usermacro.createglobal(macro="{$OPENDOCTOR.TOKEN}", value=MONITOR_TOKEN, type=1)
    templates = [
        {"eventsource": 0, "recovery": recovery, "subject": "opendoctor", "message": "opendoctor"}
        for recovery in (0, 1)
    ]
    media = api.mediatype.create(
        name="opendoctor",
        type=4,
        script=script,
        parameters=parameters,
        timeout="10s",
        message_templates=templates,
    )["mediatypeids"][0]
    api.user.update(
        userid="1",
        medias=[{"mediatypeid": media, "sendto": "opendoctor", "active": 0, "severity": 63}],
    )
    message = {"operationtype": 0, "opmessage": {"default_msg": 1, "mediatypeid": media}}
    api.action.create(
        name="opendoctor",
        eventsource=0,
        esc_period="1h",
        # Trigger name (3) contains (2) the ICMP template's.
        filter={
            "evaltype": 0,
            "conditions": [{"conditiontype": 3, "operator": 2, "value": TRIGGER}],
        },
        operations=[{**message, "opmessage_usr": [{"userid": "1"}]}],
        recovery_operations=[{"operationtype": 11, "opmessage": {"default_msg": 1}}],
    )


async def test_zabbix_runs_the_documented_webhook(
    bed: ZabbixBed, zabbix: ZabbixAPI, service: str
) -> None:
    await asyncio.to_thread(_webhook, zabbix, service)
    await asyncio.to_thread(_host, zabbix, "compute2")
    async with httpx.AsyncClient(base_url=service, headers=MONITOR) as client:
        sent = await asyncio.to_thread(_set, bed, zabbix, "compute2", False)
        fault = await eventually(lambda: _active(client, "compute2"), 30, "Zabbix's webhook")
        events = (await client.get("/v1/events", headers=OPERATOR)).json()
        [event] = [e for e in events if e["hostname"] == "compute2"]
        assert (event["reporter"], event["monitor"]) == ("tests", "zabbix")
        fields = event["details"]["fields"]
        assert fields["event_name"] == TRIGGER and fields["severity"] == "High"
        assert fields["tags.scope"] == "availability"
        assert sent <= float(fields["sent_at"])  # the script's own time of sending
        script = event["received"] - float(fields["sent_at"])
        print(
            f"\nZabbix: trapper value → fault kept {event['received'] - sent:.3f} s, "
            f"of which the media type's script's send → kept {script:.3f} s"
        )

        await asyncio.to_thread(_set, bed, zabbix, "compute2", True)
        await eventually(lambda: _cleared(client, fault["id"]), 30, "the recovery's webhook")
