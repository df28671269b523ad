"""HA as a service: the records a tenant (or an operator) declares to say what is to be
kept available, and how (docs/haas.md).

A **cluster** groups **nodes** (servers, or hosts) at one level:

- `vm`: the cluster watches its servers (their process, their guest heartbeat) and
  recovers a failed one by its policies;
- `application`: as `vm`, and also the named **services** inside the servers, each
  checked by its guest agent's health command: a failed service is recovered on its own
  (restarted through the agent) before anything is done to its server;
- `host`: the nodes are compute hosts (admin only): a failed host node is power-cycled
  through its fencing device, or its role handed to a standby host;
- `cloud-service`: the cloud's own services (controllers, their APIs), on hosts or in
  servers (admin only).

What a cluster keeps available besides its nodes are **resources** (a virtual IP, a
volume: held by one node, handed over with the active role), its **fencing devices**
(how a node is made sure to be off), and its **policies** (which operation runs when a
node or a service fails, in which order, how long each attempt may take, how often it is
tried). Every step the service takes for a cluster is kept in its **history**.

Plain records: the API checks bounds (`api.haas`), the store keeps them (`store.haas`),
`haas/` decides and acts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from opendoctor.core.model import new_id

Level = Literal["vm", "host", "application", "cloud-service"]
LEVELS: tuple[str, ...] = get_args(Level)
# Levels whose clusters only the admin role declares: they act on the cloud itself.
ADMIN_LEVELS = frozenset({"host", "cloud-service"})
ClusterState = Literal["ok", "degraded", "recovering", "failed"]
NodeKind = Literal["server", "host"]
NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
Role = Literal["active", "standby", "none"]
ROLES: tuple[str, ...] = get_args(Role)
NodeState = Literal["ok", "recovering", "failed"]
Operation = Literal["restart", "rebuild", "evacuate", "switch-over"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
AppliesTo = Literal["node", "service"]
FenceKind = Literal["bmc", "vim"]
FENCE_KINDS: tuple[str, ...] = get_args(FenceKind)

# Bounds: a cluster is a handful of nodes, not a fleet.
NAME_MAX = 255
TEXT_MAX = 1000
MAX_CLUSTERS_PER_PROJECT = 100
MAX_NODES = 64
MAX_PARTS = 64  # resources, services, fencing devices, policies: each
MAX_DOMAIN = 64
MAX_PROPERTIES = 32
PROPERTY_MAX = 1000
MAX_TIMEOUT = 3600.0
MAX_RETRIES = 10
MAX_PRIORITY = 1000
HISTORY_KEPT = 1000  # entries per cluster; older ones are dropped


@dataclass(slots=True)
class Cluster:
    name: str
    project_id: str
    level: Level = "vm"
    description: str = ""
    state: ClusterState = "ok"
    id: str = field(default_factory=new_id)
    created: float = 0.0
    updated: float = 0.0


@dataclass(slots=True)
class Node:
    """A member of a cluster: a server (`ref` is its id) or a host (`ref` is its name).
    `role` is what the node does for the cluster: `active` serves, `standby` takes over
    (highest `priority` first: the lowest number), `none` for clusters without roles."""

    cluster_id: str
    kind: NodeKind
    ref: str
    role: Role = "none"
    priority: int = 0
    state: NodeState = "ok"
    id: str = field(default_factory=new_id)
    created: float = 0.0


@dataclass(slots=True)
class Resource:
    """Something the cluster keeps available that is not a node (a virtual IP, a
    volume), held by one node: when the active role moves, so does what it held."""

    cluster_id: str
    name: str
    kind: str
    properties: dict[str, str] = field(default_factory=dict)
    node_id: str | None = None
    id: str = field(default_factory=new_id)
    created: float = 0.0


@dataclass(slots=True)
class Service:
    """A named service inside nodes: `guest_name` is its name to the guest agent
    (`--service NAME=CMD`), `node_ids` the nodes that run it (none: all of them)."""

    cluster_id: str
    name: str
    guest_name: str
    node_ids: tuple[str, ...] = ()
    id: str = field(default_factory=new_id)
    created: float = 0.0

    def runs_on(self, node_id: str) -> bool:
        return not self.node_ids or node_id in self.node_ids


@dataclass(slots=True)
class FencingDevice:
    """How a node is made sure to be off. `bmc`: a host node's BMC, the fence device
    registered for that host (`/v1/fence-devices/{host}`, or `recovery.fencing.devices`);
    `vim`: a server node is stopped through the VIM."""

    cluster_id: str
    node_id: str
    kind: FenceKind
    id: str = field(default_factory=new_id)
    created: float = 0.0


@dataclass(slots=True)
class Policy:
    """What to do when a node (or one of `services`, or any service if empty) fails.

    `operation`: restart (a server: stop and start; a host: power cycle; a service:
    restarted through the guest agent), rebuild (the server re-created from its image
    in place), evacuate (the server moved to a host of `domain`), switch-over (the
    healthiest standby of `domain`, or of the cluster, becomes active). Policies are
    tried in `priority` order (lowest first), each attempt bounded by `timeout` seconds,
    each tried `1 + retries` times before the next is."""

    cluster_id: str
    name: str
    operation: Operation
    applies_to: AppliesTo = "node"
    services: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    priority: int = 0
    timeout: float = 60.0
    retries: int = 0
    id: str = field(default_factory=new_id)
    created: float = 0.0

    def covers(self, service: str) -> bool:
        return self.applies_to == "service" and (not self.services or service in self.services)


@dataclass(slots=True)
class HistoryEntry:
    cluster_id: str
    what: str
    outcome: str  # started | ok | failed | skipped | escalated | changed
    node_id: str | None = None
    operation: str | None = None
    detail: str = ""
    at: float = 0.0
    id: str = field(default_factory=new_id)


@dataclass(slots=True)
class ClusterView:
    """A cluster with everything it holds: what the decision reads."""

    cluster: Cluster
    nodes: list[Node] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    fencing: list[FencingDevice] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def fence_of(self, node_id: str) -> FencingDevice | None:
        return next((f for f in self.fencing if f.node_id == node_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.cluster),
            "nodes": [asdict(n) for n in self.nodes],
            "resources": [asdict(r) for r in self.resources],
            "services": [asdict(s) for s in self.services],
            "fencing_devices": [asdict(f) for f in self.fencing],
            "policies": [asdict(p) for p in self.policies],
        }


# The parts of a cluster besides its nodes, by the name the API and the store use.
PART_KINDS = ("resources", "services", "fencing-devices", "policies")
Part = Resource | Service | FencingDevice | Policy
