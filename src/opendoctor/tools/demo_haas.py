"""`opendoctor demo haas`: HA as a service on the lab (docs/haas.md).

Three VMs of one server group run the application's `http` service; a cluster declares
them (web-1 active, web-2 and web-3 standbys) with three policies: restart the `http`
service through the guest agent, else hand the active role over, then rebuild the
failed node. First web-1's `http` service fails: the guest agent restarts it. Then
web-1's VM is killed: web-2 takes over, web-1 is rebuilt and comes back as a standby.
An application on each VM's agent socket shows the peer-state messages its peers get;
the cluster's history is the timeline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from opendoctor.lab.spec import LabSpec
from opendoctor.tools.bench_groups import Receiver, open_receivers
from opendoctor.tools.stack import Stack, StackError, owner, running_stack, wait_for

if TYPE_CHECKING:
    from pathlib import Path

SPEC = LabSpec(hosts=3, vms=0, projects=["project-a"], ip_prefix="127.142")
PROJECT = "project-a"
NAMES = ("web-1", "web-2", "web-3")
POLICIES = (
    {"name": "fix-http", "operation": "restart", "applies_to": "service", "services": ["http"],
     "retries": 1, "timeout": 20},
    {"name": "take-over", "operation": "switch-over", "priority": 1},
    {"name": "replace", "operation": "rebuild", "priority": 2, "timeout": 30},
)  # fmt: skip


async def _call(s: Stack, method: str, path: str, body: Any = None) -> Any:
    resp = await s.http.request(method, s.api + path, json=body, headers=owner(PROJECT))
    if not resp.ok:
        raise StackError(f"{method} {path}: HTTP {resp.status} {resp.body[:300]!r}")
    return resp.json() if resp.body else None


async def _declare(s: Stack, ids: list[str]) -> tuple[str, list[str]]:
    """The cluster over the three servers; its id and its nodes' ids."""
    cid = (await _call(s, "POST", "/v1/clusters", {"name": "web", "level": "application"}))["id"]
    nodes = []
    for i, server_id in enumerate(ids):
        body = {"ref": server_id, "role": "active" if i == 0 else "standby", "priority": i}
        nodes.append((await _call(s, "POST", f"/v1/clusters/{cid}/nodes", body))["id"])
    await _call(s, "POST", f"/v1/clusters/{cid}/services", {"name": "http", "guest_name": "http"})
    await _call(
        s, "POST", f"/v1/clusters/{cid}/fencing-devices", {"node_id": nodes[0], "kind": "vim"}
    )
    for policy in POLICIES:
        await _call(s, "POST", f"/v1/clusters/{cid}/policies", policy)
    return cid, nodes


async def _until(s: Stack, cid: str, operation: str, what: str) -> None:
    async def done() -> bool:
        found = await _call(s, "GET", f"/v1/clusters/{cid}/history?limit=1000")
        return any(e["operation"] == operation and e["outcome"] == "ok" for e in found)

    await wait_for(what, done, 60)


async def run(workdir: Path, console: Console, as_json: bool) -> tuple[int, dict[str, Any]]:
    say = (lambda *a, **k: None) if as_json else console.print
    say("[bold]opendoctor demo — HA as a service: a three-node cluster and its policies[/bold]")
    async with running_stack(SPEC, workdir) as s:
        lab = s.lab.client
        group = await lab.create_server_group("web", PROJECT)
        servers = [
            await lab.create_server(n, PROJECT, f"compute{i + 1}", services=["http"],
                                    group=group.id)
            for i, n in enumerate(NAMES)
        ]  # fmt: skip
        ids = [v.id for v in servers]
        await wait_for("the service to know the servers", lambda: _known(s, ids), 30)
        apps = await open_receivers(s, ids)
        try:
            cid, nodes = await _declare(s, ids)
            say(
                f"cluster {cid}: web-1 active, web-2 and web-3 standby; policies "
                + ", ".join(f"{p['name']} ({p['operation']})" for p in POLICIES)
            )
            started = time.time()
            say("[red]web-1's http service fails[/red]")
            await lab.set_health(ids[0], False, service="http")
            await _until(s, cid, "restart", "the http service restarted")
            # Healthy again, the guest says so and the fault clears: a failure of web-1
            # from then on is a new fault (one fault per server while it lasts).
            await wait_for("web-1's fault to clear", lambda: _clear(s, ids[0]), 30)
            restarted = await lab.server_detail(ids[0])  # a rebuild counts from 0 again
            say("[red]web-1's VM is killed[/red]")
            killed = (await lab.kill_server(ids[0]))["t00"]
            await _until(s, cid, "rebuild", "web-1 rebuilt")
            history = await _call(s, "GET", f"/v1/clusters/{cid}/history?limit=1000")
            state = await _call(s, "GET", f"/v1/clusters/{cid}/state")
            detail = await lab.server_detail(ids[0])
            heard = _peer_states(apps, ids)
        finally:
            for app in apps:
                await app.close()
    names = dict(zip(ids, NAMES, strict=True)) | dict(zip(nodes, NAMES, strict=True))
    story = _story(history, state, detail, heard, names, started, killed)
    story["service_restarts"] = _restarts(restarted)
    if not as_json:
        _render(console, story)
    problems = _problems(story)
    say(("[bold red]FAILED:[/bold red] " + "; ".join(problems)) if problems else
        "[bold green]OK:[/bold green] the service restarted in place; the VM's role handed "
        "over and the VM rebuilt as a standby")  # fmt: skip
    return (1 if problems else 0), {**story, "ok": not problems, "problems": problems}


async def _known(s: Stack, ids: list[str]) -> bool:
    return set(ids) <= {v["id"] for v in await s.get("/v1/servers")}


async def _clear(s: Stack, server_id: str) -> bool:
    active = await s.get("/v1/faults?status=active")
    return not any(f["instance_id"] == server_id for f in active)


def _peer_states(apps: list[Receiver], ids: list[str]) -> list[dict[str, Any]]:
    """Every peer-state line each application got: (when, who got it, about whom)."""
    return [
        {"at": wall, "to": ids[i], **line}
        for i, app in enumerate(apps)
        for _, wall, line in app.got
        if line.get("type") == "peer-state"
    ]


def _story(
    history: list[dict[str, Any]],
    state: dict[str, Any],
    detail: dict[str, Any],
    heard: list[dict[str, Any]],
    names: dict[str, str],
    started: float,
    killed: float,
) -> dict[str, Any]:
    return {
        "timeline": [
            {"since": e["at"] - started, "node": names.get(e["node_id"] or "", ""),
             "operation": e["operation"], "what": _named(e["what"], names),
             "outcome": e["outcome"], "detail": _named(e["detail"], names)}
            for e in history
        ],
        "peer_states": [
            {"since": h["at"] - started, "to": names.get(h["to"], h["to"]),
             "peer": names.get(h["peer"], h["peer"]), "state": h["state"],
             "reason": _named(h["reason"], names)}
            for h in sorted(heard, key=lambda h: h["at"])
        ],
        "roles": {names[n["ref"]]: [n["role"], n["state"]] for n in state["nodes"]},
        "cluster_state": state["state"],
        "rebuilds": detail.get("rebuilds", 0),
        "kill_to_rebuilt": next(
            (e["at"] - killed for e in history if e["operation"] == "rebuild"
             and e["outcome"] == "ok"), None),
    }  # fmt: skip


def _restarts(detail: dict[str, Any]) -> int:
    return sum(x["restarts"] for x in detail.get("services", []) if x["name"] == "http")


def _named(text: str | None, names: dict[str, str]) -> str:
    """`text` with the servers' and nodes' ids as their names."""
    text = text or ""
    for ident, name in names.items():
        text = text.replace(ident, name)
    return text


def _problems(story: dict[str, Any]) -> list[str]:
    problems = []
    if story["service_restarts"] != 1:
        problems.append(f"the http service was restarted {story['service_restarts']} times")
    if story["rebuilds"] != 1:
        problems.append(f"web-1 was rebuilt {story['rebuilds']} times")
    if story["roles"].get("web-2") != ["active", "ok"]:
        problems.append(f"web-2 is not the active node: {story['roles']}")
    got = {(p["to"], p["peer"], p["state"]) for p in story["peer_states"]}
    for wanted in (("web-2", "web-1", "failed"), ("web-3", "web-2", "active")):
        if wanted not in got:
            problems.append(f"{wanted[0]} was not told {wanted[1]} is {wanted[2]}")
    return problems


def _render(console: Console, story: dict[str, Any]) -> None:
    console = Console(width=max(console.width, 140))
    table = Table(title="the cluster's history")
    for col in ("+s", "node", "operation", "what", "outcome", "detail"):
        table.add_column(col)
    for e in story["timeline"]:
        table.add_row(f"{e['since']:.3f}", e["node"], e["operation"] or "", e["what"],
                      e["outcome"], e["detail"][:60])  # fmt: skip
    console.print(table)
    peers = Table(title="peer-state messages the applications on the VMs got")
    for col in ("+s", "to", "about", "state", "reason"):
        peers.add_column(col)
    for p in story["peer_states"]:
        peers.add_row(f"{p['since']:.3f}", p["to"], p["peer"], p["state"], p["reason"] or "")
    console.print(peers)
    roles = ", ".join(f"{n} {r}/{st}" for n, (r, st) in story["roles"].items())
    console.print(f"cluster {story['cluster_state']}: {roles}")
