"""`opendoctor ha ...`: HA as a service on a running service, through `/v1/clusters`:
declare clusters of servers (or hosts), their services, fencing devices and policies,
and follow their state and history. (`opendoctor cluster` is something else: the local
scaled-out service.)"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.text import Text

from opendoctor.cli.graph import API, JSON_OUT, TOKEN, api_failed, api_get, api_request
from opendoctor.cli.workflow_shared import DEFAULT_API, cut, make_table, print_json, send_json

app = typer.Typer(
    help="HA as a service: clusters of nodes (servers, or hosts) kept available by their "
    "policies.\n\n"
    "A cluster's policies say what is done when a node, or a service inside one, fails: "
    "restart (a server: stop and start; a host: power cycle; a service: through the guest "
    "agent), rebuild, evacuate (into a fail-over domain of hosts) or switch-over (a standby "
    "takes the active role). Policies run in priority order, each attempt within its "
    "timeout, retried as told, until one succeeds. Example:\n\n"
    "  opendoctor ha create web --level application\n\n"
    "  opendoctor ha add-node CLUSTER SERVER_ID --role active\n\n"
    "  opendoctor ha add-service CLUSTER http --guest-name nginx\n\n"
    "  opendoctor ha add-policy CLUSTER fix-http --operation restart --applies-to service\n\n"
    "  opendoctor ha state CLUSTER",
    short_help="HA as a service: clusters, nodes, services, fencing devices, policies.",
    no_args_is_help=True,
)

CLUSTER = Annotated[str, typer.Argument(help="the cluster's id (see `list`)")]
COLOURS = {"ok": "green", "degraded": "yellow", "recovering": "cyan", "failed": "red"}
KINDS = ("nodes", "resources", "services", "fencing-devices", "policies")


def _state(state: str) -> str:
    colour = COLOURS.get(state)
    return f"[{colour}]{escape(state)}[/{colour}]" if colour else escape(state)


def _path(cluster_id: str, tail: str = "") -> str:
    return f"/v1/clusters/{quote(cluster_id, safe='')}{tail}"


def _print(body: Any, as_json: bool, table: Any) -> None:
    if as_json:
        print_json(body)
    else:
        # Ids are printed whole: a cut id cannot be pasted into the next command.
        Console(width=max(Console().width, 160)).print(table)


def _added(
    cluster_id: str, kind: str, body: dict[str, Any], api: str, token: str | None, as_json: bool
) -> None:
    made = send_json("POST", api, _path(cluster_id, f"/{kind}"), token, body)
    print_json(made) if as_json else print(made["id"])


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="the cluster's name")],
    level: Annotated[
        str,
        typer.Option(help="vm, application (a tenant's); host, cloud-service (the admin's)"),
    ] = "vm",
    description: Annotated[str, typer.Option(help="what it is for")] = "",
    project: Annotated[
        str | None, typer.Option(help="the project it is for (admin; default: the caller's)")
    ] = None,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Declare a cluster; print its id (whole, for the next commands)."""
    body: dict[str, Any] = {"name": name, "level": level, "description": description}
    if project is not None:
        body["project_id"] = project
    made = send_json("POST", api, "/v1/clusters", token, body)
    print_json(made) if as_json else print(made["id"])


@app.command("list")
def list_clusters(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 100,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """List clusters, oldest first: level, state, project."""
    found = api_get(api, f"/v1/clusters?limit={limit}", token)
    rows = [
        (c["id"], escape(c["name"]), c["level"], _state(c["state"]), escape(c["project_id"]))
        for c in found
    ]
    columns = ("id", "name", "level", "state", "project")
    _print(found, as_json, make_table("clusters", columns, rows))


@app.command()
def show(
    cluster_id: CLUSTER, api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False
) -> None:
    """A cluster with its nodes, services, resources, fencing devices and policies."""
    c = api_get(api, _path(cluster_id), token)
    head = Text.from_markup(
        f"[bold]{escape(c['name'])}[/bold] {c['id']}: {_state(c['state'])}, level "
        f"{c['level']}, project {escape(c['project_id'])}\n{escape(c['description'])}"
    )
    nodes = [
        (n["id"], n["kind"], escape(n["ref"]), n["role"], str(n["priority"]), _state(n["state"]))
        for n in c["nodes"]
    ]
    services = [
        (s["id"], escape(s["name"]), escape(s["guest_name"]), ", ".join(s["node_ids"]) or "(all)")
        for s in c["services"]
    ]
    resources = [
        (
            r["id"],
            escape(r["name"]),
            escape(r["kind"]),
            r["node_id"] or "",
            cut(", ".join(f"{k}={v}" for k, v in r["properties"].items())),
        )
        for r in c["resources"]
    ]
    fencing = [(f["id"], f["node_id"], f["kind"]) for f in c["fencing_devices"]]
    policies = [
        (
            p["id"],
            escape(p["name"]),
            p["operation"],
            p["applies_to"],
            cut(", ".join(p["services"])),
            cut(", ".join(p["domain"])),
            str(p["priority"]),
            f"{p['timeout']:g}s",
            str(p["retries"]),
        )
        for p in c["policies"]
    ]
    _print(
        c,
        as_json,
        Group(
            head,
            make_table("nodes", ("id", "kind", "ref", "role", "priority", "state"), nodes),
            make_table("services", ("id", "name", "guest name", "nodes"), services),
            make_table("resources", ("id", "name", "kind", "held by", "properties"), resources),
            make_table("fencing devices", ("id", "node", "kind"), fencing),
            make_table(
                "policies",
                (
                    "id",
                    "name",
                    "operation",
                    "on",
                    "services",
                    "domain",
                    "priority",
                    "timeout",
                    "retries",
                ),
                policies,
            ),
        ),
    )


@app.command()
def delete(cluster_id: CLUSTER, api: API = DEFAULT_API, token: TOKEN = None) -> None:
    """Delete a cluster, its parts and its history (its servers stay as they are)."""
    _delete(api, _path(cluster_id), token)


@app.command()
def remove(
    cluster_id: CLUSTER,
    kind: Annotated[
        str, typer.Argument(help="nodes, resources, services, fencing-devices, policies")
    ],
    item_id: Annotated[str, typer.Argument(help="the item's id (see `show`)")],
    api: API = DEFAULT_API,
    token: TOKEN = None,
) -> None:
    """Remove one node, resource, service, fencing device or policy from a cluster."""
    if kind not in KINDS:
        raise typer.BadParameter(f"give one of {', '.join(KINDS)}", param_hint="KIND")
    _delete(api, _path(cluster_id, f"/{kind}/{quote(item_id, safe='')}"), token)


def _delete(api: str, path: str, token: str | None) -> None:
    resp = api_request("DELETE", api, path, token)
    if not resp.ok:
        raise api_failed(resp)


@app.command("add-node")
def add_node(
    cluster_id: CLUSTER,
    ref: Annotated[str, typer.Argument(help="the server's id, or the host's name (--kind host)")],
    kind: Annotated[str, typer.Option(help="server or host (admin)")] = "server",
    role: Annotated[str, typer.Option(help="active, standby or none")] = "none",
    priority: Annotated[int, typer.Option(min=0, max=1000, help="lower takes over first")] = 0,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Add a node; print its id."""
    body = {"kind": kind, "ref": ref, "role": role, "priority": priority}
    _added(cluster_id, "nodes", body, api, token, as_json)


@app.command("add-service")
def add_service(
    cluster_id: CLUSTER,
    name: Annotated[str, typer.Argument(help="the service's name in the cluster")],
    guest_name: Annotated[str, typer.Option(help="its name to the guest agent (--service)")],
    nodes: Annotated[
        list[str] | None, typer.Option("--node", help="a node running it (repeat; none: all)")
    ] = None,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Add a service watched inside the nodes (application level); print its id."""
    body = {"name": name, "guest_name": guest_name, "node_ids": nodes or []}
    _added(cluster_id, "services", body, api, token, as_json)


@app.command("add-resource")
def add_resource(
    cluster_id: CLUSTER,
    name: Annotated[str, typer.Argument(help="the resource's name")],
    kind: Annotated[str, typer.Option(help="what it is: ip, volume, ...")],
    node: Annotated[str | None, typer.Option(help="the node holding it")] = None,
    properties: Annotated[
        list[str] | None, typer.Option("--property", help="KEY=VALUE (repeat)")
    ] = None,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Add a resource (a virtual IP, a volume) held by a node; print its id."""
    values: dict[str, str] = {}
    for pair in properties or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: give KEY=VALUE", param_hint="--property")
        values[key] = value
    body = {"name": name, "kind": kind, "node_id": node, "properties": values}
    _added(cluster_id, "resources", body, api, token, as_json)


@app.command("add-fencing")
def add_fencing(
    cluster_id: CLUSTER,
    node: Annotated[str, typer.Argument(help="the node's id")],
    kind: Annotated[
        str, typer.Option(help="bmc (a host node's registered BMC) or vim (stop the server)")
    ],
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Give a node its fencing device; print its id."""
    _added(cluster_id, "fencing-devices", {"node_id": node, "kind": kind}, api, token, as_json)


@app.command("add-policy")
def add_policy(
    cluster_id: CLUSTER,
    name: Annotated[str, typer.Argument(help="the policy's name")],
    operation: Annotated[str, typer.Option(help="restart, rebuild, evacuate or switch-over")],
    applies_to: Annotated[str, typer.Option(help="node or service")] = "node",
    services: Annotated[
        list[str] | None, typer.Option("--service", help="a service it covers (repeat; none: all)")
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain",
            help="evacuate: a host to move to; switch-over: a node that may take over (repeat)",
        ),
    ] = None,
    priority: Annotated[int, typer.Option(min=0, max=1000, help="lower is tried first")] = 0,
    timeout: Annotated[float, typer.Option(help="seconds per attempt")] = 60.0,
    retries: Annotated[int, typer.Option(min=0, max=10, help="attempts after the first")] = 0,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """Add a policy: what is done when a node (or a service) fails; print its id."""
    body = {
        "name": name,
        "operation": operation,
        "applies_to": applies_to,
        "services": services or [],
        "domain": domain or [],
        "priority": priority,
        "timeout": timeout,
        "retries": retries,
    }
    _added(cluster_id, "policies", body, api, token, as_json)


@app.command()
def state(
    cluster_id: CLUSTER, api: API = DEFAULT_API, token: TOKEN = None, as_json: JSON_OUT = False
) -> None:
    """The cluster's state, and each node's role and state."""
    found = api_get(api, _path(cluster_id, "/state"), token)
    rows = [
        (n["id"], n["kind"], escape(n["ref"]), n["role"], _state(n["state"]))
        for n in found["nodes"]
    ]
    title = f"cluster {found['id']}: {found['state']}"
    _print(found, as_json, make_table(title, ("id", "kind", "ref", "role", "state"), rows))


@app.command()
def history(
    cluster_id: CLUSTER,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="the newest this many")] = 100,
    api: API = DEFAULT_API,
    token: TOKEN = None,
    as_json: JSON_OUT = False,
) -> None:
    """What was done for the cluster, oldest first: each failure, attempt and outcome."""
    from datetime import UTC, datetime

    found = api_get(api, _path(cluster_id, f"/history?limit={limit}"), token)
    rows = [
        (
            datetime.fromtimestamp(e["at"], UTC).strftime("%H:%M:%S.%f")[:-3],
            e["node_id"] or "",
            escape(e["operation"] or ""),
            cut(e["what"]),
            _state(e["outcome"]),
            cut(e["detail"]),
        )
        for e in found
    ]
    columns = ("time (UTC)", "node", "operation", "what", "outcome", "detail")
    _print(found, as_json, make_table("history", columns, rows))
