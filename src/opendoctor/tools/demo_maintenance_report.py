"""What `opendoctor demo maintenance` reports: each host's timeline, each instance's
move, the clients' requests and what the VNF manager did; as figures and as tables."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from opendoctor.tools.demo_uc2 import Traffic


def _since(times: dict[tuple[str, str], float], host: str, state: str, t0: float) -> float | None:
    at = times.get((host, state))
    return None if at is None else at - t0


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def host_timeline(
    detail: dict[str, Any],
    times: dict[tuple[str, str], float],
    t0: float,
    lab_hosts: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Per host, in the order the session took them: when it began to be emptied, was in
    maintenance (empty) and was back in service, seconds after the session started."""
    rows = []
    for h in detail["host_progress"]:
        name = h["name"]
        draining = _since(times, name, "draining", t0)
        in_maintenance = _since(times, name, "in_maintenance", t0)
        returned = _since(times, name, "returned", t0)
        rows.append(
            {
                "host": name,
                "state": h["state"],
                "draining_at": draining,
                "in_maintenance_at": in_maintenance,
                "returned_at": returned,
                "emptying": _gap(draining, in_maintenance),
                "maintained": _gap(in_maintenance, returned),
                "version_before": h["version_before"],
                "version_after": h["version_after"],
                "version_now": lab_hosts.get(name, {}).get("version"),
                "error": h["error"],
            }
        )
    rows.sort(key=lambda r: (r["draining_at"] is None, r["draining_at"] or 0.0))
    return rows


def request_tally(traffic: Traffic, start: float, end: float) -> dict[str, Any]:
    """The clients' requests sent while the session ran: how many, how many failed
    (anything but a 200), and who served the others."""
    during = [r for r in traffic.results if start <= r[0] <= end]
    failed = [r for r in during if r[1] != 200]
    served = Counter(r[2].removeprefix("Served by ") for r in during if r[1] == 200)
    return {
        "sent": len(during),
        "failed": len(failed),
        "kinds": sorted({f"{r[1] or 'no answer'} {r[2]}"[:70] for r in failed}),
        "per_second": len(during) / (end - start) if end > start else 0.0,
        "served_by": dict(sorted(served.items())),
    }


def vnfm_summary(status: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """What the VNF manager says it did (its `GET /status`), in brief; servers by their
    `names` (id -> name)."""
    replies = status.get("replies", [])
    return {
        "notices": dict(Counter(n["state"] for n in status.get("notices", []))),
        "repeats": len(status.get("repeats", [])),
        "replies": dict(Counter(r["state"] for r in replies)),
        "replies_refused": [r for r in replies if r.get("status") != 200],
        "switchovers": [
            {
                "from": names.get(sw["failed"], sw["failed"]),
                "to": names.get(sw["standby"], sw["standby"]),
                "reason": sw["reason"],
                "took": None if sw["done"] is None else sw["done"] - sw["notified"],
                "error": sw["error"],
            }
            for sw in status.get("switchovers", [])
        ],
        "own_moves": [
            {
                "server": names.get(m["instance_id"], m["instance_id"]),
                "from": m["from"],
                "to": m["to"],
                "took": m["done"] - m["started"],
            }
            for m in status.get("own_moves", [])
        ],
        "instance_action_done": len(status.get("instance_action_done", [])),
        "errors": status.get("errors", []),
    }


def _s(seconds: float | None, signed: bool = False) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:+.1f} s" if signed else f"{seconds:.1f} s"


def _table(title: str, *columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    return table


def render(console: Console, result: dict[str, Any]) -> None:
    session = result["session"]
    console.print(
        f"session {session['id']} ended [bold]{session['state']}[/bold] after "
        f"{session['duration']:.1f} s (times as seen every {result['poll_interval']:g} s)"
    )
    times = ("drain at", "maint. at", "back at", "draining", "in maint.")
    hosts = _table(
        "hosts in the order taken (at: seconds after the session started)",
        "host", *times, "version", right=times,
    )  # fmt: skip
    for h in result["hosts"]:
        hosts.add_row(
            h["host"],
            _s(h["draining_at"], True),
            _s(h["in_maintenance_at"], True),
            _s(h["returned_at"], True),
            _s(h["emptying"]),
            _s(h["maintained"]),
            f"{h['version_before']}→{h['version_after'] or '—'}",
        )
    console.print(hosts)
    moves = _table(
        "instances moved", "instance", "project", "action", "from → to", "took", "chosen by",
        right=("took",),
    )  # fmt: skip
    for m in result["moves"]:
        moves.add_row(
            m["name"],
            m["project_id"],
            m["action"],
            f"{m['from']} → {m['to'] or '?'}" + (f" ({m['error']})" if m["error"] else ""),
            _s(m["finished"] - m["started"]),
            "its owner" if m["decided_by"] == "owner" else "default",
        )
    console.print(moves)
    for p in result["projects"]:
        defaults = ", ".join(p["defaults"]) or "none"
        console.print(
            f"{p['project_id']}: last answer {p['answered'] or '—'}; defaulted: {defaults}"
        )
    req = result["requests"]
    served = ", ".join(f"{k}: {v}" for k, v in req["served_by"].items())
    console.print(
        f"clients: {req['sent']} requests during the session ({req['per_second']:.0f}/s), "
        f"[bold]{req['failed']} failed[/bold]"
        + (f" ({', '.join(req['kinds'])})" if req["kinds"] else "")
        + f"; served by {served}"
    )
    vnfm = result["vnfm"]
    switches = _table(
        "the VNF manager's switch-overs", "from", "to", "why", "took", "result", right=("took",)
    )
    for sw in vnfm["switchovers"]:
        took = "—" if sw["took"] is None else f"{sw['took'] * 1000:.0f} ms"
        switches.add_row(sw["from"], sw["to"], sw["reason"], took, sw["error"] or "done")
    console.print(switches)
    for m in vnfm["own_moves"]:
        console.print(
            f"the VNF manager moved {m['server']} ({m['from']} → {m['to']}, {m['took']:.1f} s) "
            "itself, ahead of its active on the same host"
        )
    notices = ", ".join(f"{k}: {v}" for k, v in vnfm["notices"].items())
    console.print(
        f"VNF manager: notices {notices}; replies "
        + ", ".join(f"{k}: {v}" for k, v in vnfm["replies"].items())
        + (f"; errors: {vnfm['errors']}" if vnfm["errors"] else "")
    )
    if result["faults_during_session"]:
        console.print(f"[red]faults opened during the session: {result['faults_during_session']}")
