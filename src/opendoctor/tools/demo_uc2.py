"""`opendoctor demo uc2`: an active/standby pair behind a load balancer; the active dies.

The VNF manager (the sample consumer in active/standby mode) hears of the failure
through its alarm callback, activates the standby and switches the load balancer.
Clients send requests to the virtual IP at a steady rate throughout; the demo counts
the ones that failed between the fault and the switch-over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.core.model import CHECKPOINTS, Server
from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.lab.client import LabClient
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.stack import Stack, StackError, alarm_body, owner, running_stack, wait_for

UC2_SPEC = LabSpec(hosts=2, vms=0, projects=["project-a"], ip_prefix="127.63")
PROJECT = "project-a"
LIMIT_NOTIFY = 1.0


@dataclass
class Traffic:
    """Clients of the service: one GET to the virtual IP every `period` seconds."""

    url: str
    period: float = 0.01
    results: list[tuple[float, int, str]] = field(default_factory=list)  # (sent, status, body)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        # A client of its own: fresh connections, as independent clients would have.
        http = HttpClient(timeout=0.5)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                sent = time.time()
                try:
                    resp = await http.get(self.url)
                    self.results.append((sent, resp.status, resp.body.decode().strip()))
                except HttpError as exc:
                    self.results.append((sent, 0, exc.__class__.__name__))
                next_at += self.period
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            await http.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def failed_between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        return [r for r in self.results if start <= r[0] <= end and r[1] != 200]


async def create_pair(lab: LabClient) -> tuple[Server, Server, dict[str, Any]]:
    """An active and a standby server of one owner on two hosts, behind one pool whose
    only enabled member is the active one: (active, standby, pool)."""
    active = await lab.create_server("server1", PROJECT, host="compute1", role="active")
    standby = await lab.create_server("server2", PROJECT, host="compute2", role="standby")
    pool = await lab.create_pool(
        "web",
        [
            {"server_id": active.id, "admin_state_up": True},
            {"server_id": standby.id, "admin_state_up": False},
        ],
    )
    return active, standby, pool


def vip_url(pool: dict[str, Any]) -> str:
    """Where clients reach a pool: its virtual IP."""
    return f"http://{pool['vip_address']}:{pool['vip_port']}/"


async def servers_known(s: Stack, servers: list[Server], what: str = "the pair") -> None:
    """Until the service has learnt of `servers` from the VIM (owners' requests about
    them are refused until then)."""

    async def known() -> bool:
        ids = {v["id"] for v in await s.get("/v1/servers")}
        return {server.id for server in servers} <= ids

    await wait_for(f"the service to learn about {what}", known, 10)


async def setup_pair(s: Stack) -> dict[str, Any]:
    """Two servers of one owner on two hosts, behind one pool; alarms; the VNFM's pair."""
    active, standby, pool = await create_pair(s.lab.client)
    await servers_known(s, [active, standby])
    consumer = s.consumers[PROJECT]
    headers = owner(PROJECT)
    for server in (active, standby):
        body = alarm_body({"id": server.id, "name": server.name}, consumer.ready + "/failure")
        resp = await s.http.post(s.api + "/v2/alarms", json=body, headers=headers)
        if resp.status != 201:
            raise StackError(f"alarm not created: HTTP {resp.status} {resp.body[:300]!r}")
    resp = await s.http.put(
        consumer.ready + "/pairs", json={"active": active.id, "standby": standby.id}
    )
    if not resp.ok:
        raise StackError(f"the consumer refused the pair: {resp.body[:300]!r}")
    return {"active": active, "standby": standby, "pool": pool, "vip": vip_url(pool)}


async def kill_and_switch(s: Stack, pair: dict[str, Any], traffic: Traffic) -> dict[str, Any]:
    """Kill the active server's process; wait for the owner to switch over."""
    active, standby = pair["active"], pair["standby"]
    consumer = s.consumers[PROJECT].ready
    before = len((await s.http.get(consumer + "/switchovers")).json())
    t00 = (await s.lab.client.kill_server(active.id))["t00"]

    async def switched() -> dict[str, Any] | None:
        done = (await s.http.get(consumer + "/switchovers")).json()[before:]
        return next((d for d in done if d["done"] or d["error"]), None)

    switch = await wait_for(f"the owner of {active.name} to switch over", switched, 10)
    if switch["error"]:
        raise StackError(f"switch-over failed: {switch['error']}")

    async def fault() -> dict[str, Any] | None:
        # Whatever its status (newest first): VM recovery may have restarted the server,
        # and its fault cleared, by now.
        faults = await s.get("/v1/faults")
        return next(
            (f for f in faults if f.get("instance_id") == active.id and f["started"] >= t00), None
        )

    found = await wait_for(f"the fault of {active.name}", fault, 10)
    # Let clients run on the new active a little, so the tally covers the recovery.
    settle = time.time() + 0.3
    await wait_for("clients to be served after the switch", _served_after(traffic, settle), 5)
    failed = traffic.failed_between(t00, switch["done"] + 0.3)
    window = [r for r in traffic.results if t00 <= r[0] <= switch["done"]]
    trace = dict(found["trace"], T00=t00, T09=switch["notified"], T10=switch["done"])
    return {
        "failed_server": active.name,
        "standby": standby.name,
        "fault_id": found["id"],
        "signals": found["signals"],
        "trace": trace,
        "requests": {
            "sent_during_switchover": len(window),
            "failed": len(failed),
            "failures": sorted({_short(r[1], r[2]) for r in failed}),
        },
        "totals": {
            "detection": trace["T01"] - t00,
            "detection_to_notification": switch["notified"] - trace["T01"],
            "fault_to_notification": switch["notified"] - t00,
            "fault_to_switchover": switch["done"] - t00,
        },
    }


def _short(status: int, body: str) -> str:
    text = f"{status or 'no answer'} {body}"
    return text if len(text) <= 70 else text[:69] + "…"


def _served_after(traffic: Traffic, at: float) -> Any:
    async def check() -> bool:
        return any(r[0] >= at and r[1] == 200 for r in traffic.results)

    return check


async def run(workdir: Path, console: Console, as_json: bool) -> tuple[int, dict[str, Any]]:
    say = (lambda *a, **k: None) if as_json else console.print
    say("[bold]opendoctor demo — UC2: one VM of an active/standby pair fails[/bold]")
    async with running_stack(UC2_SPEC, workdir) as s:
        say(f"dashboard: {s.api}/ui/ (sign in as admin)")
        pair = await setup_pair(s)
        traffic = Traffic(pair["vip"])
        traffic.start()
        try:
            await wait_for("clients to be served", lambda: _count(traffic, 5), 10)
            say(f"clients → {pair['vip']} (load balancer, 100 requests/s):")
            for sent, status, body in traffic.results[:5]:
                say(f"  {time.strftime('%H:%M:%S', time.localtime(sent))} {status} {body}")
            say(f"[red]killing the process of {pair['active'].name}[/red]")
            story = await kill_and_switch(s, pair, traffic)
            say("clients now:")
            for sent, status, body in traffic.results[-3:]:
                say(f"  {time.strftime('%H:%M:%S', time.localtime(sent))} {status} {body}")
        finally:
            await traffic.stop()
    if not as_json:
        render(console, story)
    problems = []
    d2n = story["totals"]["detection_to_notification"]
    if d2n >= LIMIT_NOTIFY:
        problems.append(f"detection to notification took {d2n * 1000:.0f} ms (limit 1 s)")
    if not traffic.results or traffic.results[-1][2] != f"Served by {pair['standby'].name}":
        problems.append("clients are not served by the standby at the end")
    result = {"switchover": story, "ok": not problems, "problems": problems}
    say(
        ("[bold red]FAILED:[/bold red] " + "; ".join(problems))
        if problems
        else f"[bold green]OK:[/bold green] switched over "
        f"{story['totals']['fault_to_switchover'] * 1000:.0f} ms after the fault; "
        f"{story['requests']['failed']} client requests failed"
    )
    return (1 if problems else 0), result


async def _count(traffic: Traffic, n: int) -> bool:
    return sum(r[1] == 200 for r in traffic.results) >= n


def render(console: Console, story: dict[str, Any]) -> None:
    trace = story["trace"]
    t00 = trace["T00"]
    table = Table(title=f"timeline of the {story['failed_server']} failure")
    for col, justify in (("checkpoint", "left"), ("what", "left"), ("since T00", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for cp, at in sorted(trace.items(), key=lambda kv: kv[1]):
        label = CHECKPOINTS.get(cp, cp)
        if cp == "T00":
            label = f"{story['failed_server']}'s process killed"
        table.add_row(cp, label, f"{(at - t00) * 1000:8.1f} ms")
    console.print(table)
    req = story["requests"]
    console.print(
        f"detected by {', '.join(story['signals'])}; "
        f"{req['failed']} of {req['sent_during_switchover']} client requests sent between the "
        f"fault and the switch-over failed"
        + (f" ({', '.join(req['failures'])})" if req["failures"] else "")
    )
