"""`opendoctor demo maintenance`: every host of a lab upgraded, one after another, while
clients keep using a service that runs on them.

Project A runs an active/standby pair (server1 on compute1, server2 on compute2) behind
the lab's load balancer, and its VNF manager (`opendoctor vnfm`, a process of its own)
answers every maintenance notice: it switches the pair over before the active's host is
emptied. Project B's server3 on compute3 has no manager: it never answers, and the
defaults apply. A new version is staged on every host; the session powers each emptied
host off and on through its BMC, and it comes back with that version. Clients send 100
requests/s to the pair's virtual IP throughout; the goal is that none fails.

`maintenance_lab`, `start_session` and `Follower` are the end-to-end tests' too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from opendoctor.core.model import Server
from opendoctor.infra.procs import ChildProcess, free_port
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo_maintenance_report import (
    host_timeline,
    render,
    request_tally,
    vnfm_summary,
)
from opendoctor.tools.demo_uc2 import PROJECT, Traffic, create_pair, servers_known, vip_url
from opendoctor.tools.stack import Stack, StackError, running_stack, wait_for

SILENT = "project-b"  # an owner with no VNF manager: every default applies to it
SPEC = LabSpec(hosts=3, vms=0, projects=[PROJECT, SILENT], ip_prefix="127.77")
NEW_VERSION = "2.0"
# Owners have this long to answer: a silent one holds each of its steps that long.
REPLY_TIMEOUT = 5.0
SERVICE_ENV = {
    "OPENDOCTOR_MAINTENANCE__REPLY_TIMEOUT": str(REPLY_TIMEOUT),
    "OPENDOCTOR_MAINTENANCE__COMPLETE_WAIT": "3",
    # A move (or a host left with servers on it) fails the session in this time, rather
    # than the demo's wait running out first.
    "OPENDOCTOR_MAINTENANCE__MOVE_TIMEOUT": "30",
}
# Each emptied host is powered off and on through its BMC. A lab host is back within a
# tenth of a second, after the service's monitor (4 missed 10 ms probes, some 40 ms)
# may have called it down; real hosts take minutes. Off for a second, its going down is
# seen (and is no fault: the session holds it in maintenance, and returns it once it is
# heard again).
HOST_ACTIONS = [{"plugin": "power_cycle", "type": "host", "metadata": {"off_seconds": 1}}]
SESSION_WAIT = 180.0  # seconds the whole session may take before the demo gives up
POLL = 0.1  # how often the session is looked at: the timeline's resolution
ENDED = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED")


@dataclass
class MaintenanceLab:
    """The demo's world: the stack, project A's pair and VNF manager, project B's server."""

    s: Stack
    active: Server
    standby: Server
    silent: Server
    pool: dict[str, Any]
    vnfm: ChildProcess
    version: str

    @property
    def vip(self) -> str:
        return vip_url(self.pool)

    @property
    def servers(self) -> list[Server]:
        return [self.active, self.standby, self.silent]

    async def vnfm_status(self) -> dict[str, Any]:
        resp = await self.s.http.get(self.vnfm.ready + "/status", timeout=5.0)
        if not resp.ok:
            raise StackError(f"the VNF manager's /status: HTTP {resp.status}")
        status: dict[str, Any] = resp.json()
        return status


def vnfm_child(
    s: Stack, workdir: Path, port: int, pairs: dict[str, str], options: Sequence[str] = ()
) -> ChildProcess:
    """Project A's VNF manager as `opendoctor vnfm`: it switches `pairs` over through the
    lab, and its group lets one member move at a time (`--constraints`)."""
    args = ["vnfm", "--api", s.api, "--project", PROJECT, "--port", str(port)]
    args += ["--lab-url", s.lab.url, "--constraints", "--quiet"]
    for active, standby in pairs.items():
        args += ["--pair", f"{active}={standby}"]
    return ChildProcess.python(
        f"vnfm-{PROJECT}", "opendoctor", [*args, *options], workdir, tied=True
    )


@contextlib.asynccontextmanager
async def maintenance_lab(
    workdir: Path,
    spec: LabSpec = SPEC,
    service_env: dict[str, str] | None = None,
    vnfm_options: Sequence[str] = (),
    version: str = NEW_VERSION,
) -> AsyncIterator[MaintenanceLab]:
    """The stack with the pair, project B's server, `version` staged on every host, and
    project A's VNF manager running (`vnfm_options` added to its command line)."""
    port = free_port()
    env = {**SERVICE_ENV, **(service_env or {})}
    allow = [f"127.0.0.1:{port}"]
    async with running_stack(spec, workdir, service_env=env, egress_allow=allow) as s:
        active, standby, pool = await create_pair(s.lab.client)
        silent = await s.lab.client.create_server("server3", SILENT, host="compute3")
        await servers_known(s, [active, standby, silent], "the servers")
        for i in range(1, spec.hosts + 1):
            await s.lab.client.stage_version(spec.host_name(i), version)
        vnfm = vnfm_child(s, workdir, port, {active.id: standby.id}, vnfm_options)
        await vnfm.start()
        try:
            yield MaintenanceLab(s, active, standby, silent, pool, vnfm, version)
        finally:
            await vnfm.stop()


async def start_session(s: Stack, hosts: list[str], **body: Any) -> str:
    """`POST /v1/maintenance` as the admin; the session's id."""
    request = {"hosts": hosts, "state": "MAINTENANCE", "workflow": "default", **body}
    resp = await s.http.post(s.api + "/v1/maintenance", json=request, headers=s.admin)
    if resp.status != 200:
        raise StackError(f"session not started: HTTP {resp.status} {resp.body[:300]!r}")
    session_id: str = resp.json()["session_id"]
    return session_id


@dataclass
class Follower:
    """Looks at a session every `POLL` seconds; says each change as it sees it, and
    keeps when it saw it (the detail's own times are whole seconds)."""

    s: Stack
    session_id: str
    started: float
    say: Callable[[str], None] = lambda line: None
    detail: dict[str, Any] = field(default_factory=dict)
    # (entity, name) -> (state, since): each host's, instance's and project's last.
    last: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    # (host, state) -> when first seen in it.
    host_times: dict[tuple[str, str], float] = field(default_factory=dict)
    moves: list[dict[str, Any]] = field(default_factory=list)
    moving_since: dict[str, float] = field(default_factory=dict)
    ended_at: float | None = None
    _polled: float = 0.0

    async def poll(self) -> dict[str, Any]:
        detail: dict[str, Any] = await self.s.get(f"/v1/maintenance/{self.session_id}/detail")
        now = time.time()
        self._changes(detail, now)
        self.detail, self._polled = detail, now
        return detail

    async def until(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float
    ) -> dict[str, Any]:
        async def polled() -> dict[str, Any] | None:
            detail = await self.poll()
            return detail if check(detail) else None

        return await wait_for(what, polled, timeout, POLL)

    async def until_ended(self, timeout: float = SESSION_WAIT) -> dict[str, Any]:
        return await self.until(lambda d: d["state"] in ENDED, "the session to end", timeout)

    def _line(self, at: float, text: str) -> None:
        self.say(f"  [dim]{at - self.started:+7.1f} s[/dim]  {text}")

    def _changed(self, entity: str, name: str, state: str, at: float) -> float | None:
        """Record `state`; when the previous one began if it changed, else None."""
        before = self.last.get((entity, name))
        if before is not None and before[0] == state:
            return None
        self.last[(entity, name)] = (state, at)
        return before[1] if before is not None else at

    def _changes(self, d: dict[str, Any], now: float) -> None:
        waiting = d.get("waiting") or ""
        if self._changed("session", "state", d["state"], now) is not None:
            self._line(now, f"session [bold]{d['state']}[/bold]")
            if d["state"] in ENDED:
                self.ended_at = now
        if self._changed("session", "waiting", waiting, now) is not None and waiting:
            self._line(now, f"session waits: {waiting}")
        for p in d["projects"]:
            said = p["reply"] or ("no answer: default" if p["defaulted"] else "")
            if said and self._changed("project", p["project_id"], f"{p['asked']}/{said}", now):
                self._line(now, f"{p['project_id']} to {p['asked']}: {said}")
        asked = {p["project_id"]: p["instance_actions"] for p in d["projects"]}
        for i in d["instances"]:
            key = i["instance_id"]
            if self._changed("instance", key, i["state"], now) is None:
                continue
            if i["state"] == "moving":
                self.moving_since[key] = now
            if i["state"] not in ("done", "failed"):
                continue
            # Not seen moving: it moved between the last look and this one.
            began = self.moving_since.pop(key, self._polled or now)
            move = {
                "instance_id": key,
                "name": i["name"],
                "project_id": i["project_id"],
                "action": i["action"],
                "from": i["host"],
                "to": i["to_host"],
                "state": i["state"],
                "error": i["error"],
                "decided_by": "owner" if key in asked.get(i["project_id"], {}) else "default",
                "started": began,
                "finished": now,
            }
            self.moves.append(move)
            self._line(
                now,
                f"{i['name']} ({i['project_id']}) {i['action']} {i['host']} → "
                f"{i['to_host'] or '?'}: {i['state']} ({move['decided_by']}, "
                f"≈{now - began:.1f} s)",
            )

        for h in d["host_progress"]:
            if self._changed("host", h["name"], h["state"], now) is None:
                continue
            self.host_times.setdefault((h["name"], h["state"]), now)
            extra = ""
            if h["state"] == "returned":
                extra = f": version {h['version_before']} → {h['version_after']}"
            elif h["state"] == "failed":
                extra = f": {h['error']}"
            self._line(now, f"{h['name']} {h['state']}{extra}")


async def run(workdir: Path, console: Console, as_json: bool) -> tuple[int, dict[str, Any]]:
    say: Callable[..., None] = (lambda *a, **k: None) if as_json else console.print
    say("[bold]opendoctor demo — planned maintenance: every host upgraded, clients served[/bold]")
    async with maintenance_lab(workdir) as lab:
        s = lab.s
        say(f"dashboard: {s.api}/ui/ (sign in as admin)")
        hosts = [SPEC.host_name(i) for i in range(1, SPEC.hosts + 1)]
        before = {v.id: v for v in await s.lab.client.servers()}
        versions = {h["name"]: h["version"] for h in await s.lab.client.host_details()}
        say(
            f"{len(hosts)} hosts at version {', '.join(sorted(set(versions.values())))}, "
            f"{lab.version} staged on each; {PROJECT}'s pair {lab.active.name} (active, "
            f"{lab.active.host}) / {lab.standby.name} (standby, {lab.standby.host}) behind "
            f"{lab.vip}, its VNF manager at {lab.vnfm.ready}; {SILENT}'s {lab.silent.name} on "
            f"{lab.silent.host}, no manager (owners have {REPLY_TIMEOUT:g} s to answer)"
        )
        traffic = Traffic(lab.vip)
        traffic.start()
        try:
            await wait_for("clients to be served", lambda: _served(traffic, 5), 10)
            say(f"clients → {lab.vip} at 100 requests/s; starting the session over {hosts}")
            started = time.time()
            session_id = await start_session(
                s, hosts, metadata={"version": lab.version}, actions=HOST_ACTIONS
            )
            follower = Follower(s, session_id, started, say)
            try:
                detail = await follower.until_ended()
            except StackError as exc:  # it is reported as it was when the wait ran out
                say(f"[red]{exc}[/red]")
                detail = follower.detail or await follower.poll()
            ended = follower.ended_at or time.time()
        finally:
            await traffic.stop()
        after = {v.id: v for v in await s.lab.client.servers()}
        hosts_now = {h["name"]: h for h in await s.lab.client.host_details()}
        faults = [f for f in await s.get("/v1/faults") if f["started"] >= started]
        status = await lab.vnfm_status()
    result: dict[str, Any] = {
        "session": {
            "id": session_id,
            "state": detail["state"],
            "error": detail["error"],
            "waiting": detail["waiting"],
            "duration": ended - started,
        },
        "hosts": host_timeline(detail, follower.host_times, started, hosts_now),
        "moves": [
            m | {"started": m["started"] - started, "finished": m["finished"] - started}
            for m in follower.moves
        ],
        "projects": [
            {"project_id": p["project_id"], "answered": p["reply"], "defaults": p["defaults"]}
            for p in detail["projects"]
        ],
        "requests": request_tally(traffic, started, ended),
        "vnfm": vnfm_summary(status, {k: v.name for k, v in before.items()}),
        "faults_during_session": [
            {"id": f["id"], "host": f["hostname"], "type": f.get("type")} for f in faults
        ],
        "poll_interval": POLL,
    }
    problems = check(result, before, after, hosts_now, lab.version)
    result |= {"ok": not problems, "problems": problems}
    if not as_json:
        render(console, result)
    req = result["requests"]
    say(
        ("[bold red]FAILED:[/bold red] " + "; ".join(problems))
        if problems
        else f"[bold green]OK:[/bold green] {len(hosts)} hosts upgraded to {lab.version} in "
        f"{result['session']['duration']:.1f} s; {req['failed']} of {req['sent']} client "
        f"requests failed"
    )
    return (1 if problems else 0), result


async def _served(traffic: Traffic, n: int) -> bool:
    return sum(r[1] == 200 for r in traffic.results) >= n


def check(
    result: dict[str, Any],
    before: dict[str, Server],
    after: dict[str, Server],
    hosts: dict[str, dict[str, Any]],
    version: str,
) -> list[str]:
    """What a user of the demo would call a failure, each said in a line."""
    problems = []
    session = result["session"]
    if session["state"] not in ENDED:
        problems.append(
            f"the session had not ended after {session['duration']:.0f} s: {session['state']}"
            f", waiting for {session['waiting'] or 'nothing said'}"
        )
    elif session["state"] != "MAINTENANCE_DONE":
        problems.append(f"the session ended {session['state']}: {session['error']}")
    req = result["requests"]
    if req["failed"]:
        problems.append(
            f"{req['failed']} of {req['sent']} client requests failed ({', '.join(req['kinds'])})"
        )
    lost = [v.name for k, v in before.items() if k not in after]
    broken = [
        f"{v.name} {v.status}" for k, v in after.items() if k in before and v.status != "ACTIVE"
    ]
    if lost or broken:
        problems.append(f"servers lost: {', '.join(lost + broken)}")
    behind = [f"{n} {h['version']}" for n, h in sorted(hosts.items()) if h["version"] != version]
    if behind:
        problems.append(f"hosts not at {version}: {', '.join(behind)}")
    for fault in result["faults_during_session"]:
        problems.append(f"a fault was opened on {fault['host']} during the session")
    return problems
