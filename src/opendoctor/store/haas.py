"""HA-as-a-service clusters (`core.haas`): the API edits them, the engine (`haas/`) reads
a cluster whole when one of its nodes fails and writes back roles, states and history.

Nodes have a table of their own (a failure finds its node by the failed resource's id or
name); a cluster's other parts (resources, services, fencing devices, policies) are JSON
documents beside it, read with the cluster.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any, TypeVar, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from opendoctor.core.haas import (
    HISTORY_KEPT,
    Cluster,
    ClusterView,
    FencingDevice,
    HistoryEntry,
    Node,
    Part,
    Policy,
    Resource,
    Service,
)
from opendoctor.store.db import Database
from opendoctor.store.paging import UnknownMarker
from opendoctor.store.tables import HaClusterRow, HaHistoryRow, HaNodeRow, HaPartRow

CLUSTERS = cast(Table, HaClusterRow.__table__)
NODES = cast(Table, HaNodeRow.__table__)
PARTS = cast(Table, HaPartRow.__table__)
HISTORY = cast(Table, HaHistoryRow.__table__)

# The record each part kind is, by the name the API gives it.
PART_TYPES: dict[str, type[Part]] = {
    "resources": Resource,
    "services": Service,
    "fencing-devices": FencingDevice,
    "policies": Policy,
}
_TUPLES = ("node_ids", "services", "domain")  # list fields kept as tuples in records
_OWN = ("id", "cluster_id", "created")  # columns of their own, not in the document


R = TypeVar("R", Cluster, Node, HistoryEntry)


class Taken(Exception):
    """The node is in the cluster already."""


def _record(kind: type[R], row: RowMapping) -> R:
    """A cluster, node or history entry from its row: the columns are its fields."""
    return kind(**{f.name: row[f.name] for f in fields(kind)})


def _part(row: RowMapping) -> Part:
    doc = dict(row["doc"])
    for name in _TUPLES:
        if name in doc:
            doc[name] = tuple(doc[name])
    kind = PART_TYPES[row["kind"]]
    return kind(cluster_id=row["cluster_id"], id=row["id"], created=row["created"], **doc)


def kind_of(part: Part) -> str:
    return next(k for k, t in PART_TYPES.items() if isinstance(part, t))


class HaasStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- clusters --------------------------------------------------------------------

    async def add_cluster(self, cluster: Cluster) -> Cluster:
        cluster.created = cluster.updated = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(CLUSTERS.insert().values(**asdict(cluster)))
        return cluster

    async def count_clusters(self, project_id: str) -> int:
        query = select(func.count()).select_from(CLUSTERS)
        async with self.db.engine.connect() as conn:
            found = await conn.scalar(query.where(CLUSTERS.c.project_id == project_id))
        return int(found or 0)

    async def clusters(
        self, project_id: str | None, limit: int, marker: str | None = None
    ) -> list[Cluster]:
        """Oldest first (then by id); `project_id` None: every project's."""
        query = select(CLUSTERS).order_by(CLUSTERS.c.created, CLUSTERS.c.id).limit(limit)
        if project_id is not None:
            query = query.where(CLUSTERS.c.project_id == project_id)
        async with self.db.engine.connect() as conn:
            if marker is not None:
                at = await conn.scalar(select(CLUSTERS.c.created).where(CLUSTERS.c.id == marker))
                if at is None:
                    raise UnknownMarker(marker)
                later = (CLUSTERS.c.created > at) | (
                    (CLUSTERS.c.created == at) & (CLUSTERS.c.id > marker)
                )
                query = query.where(later)
            return [_record(Cluster, r) for r in (await conn.execute(query)).mappings()]

    async def cluster(self, cluster_id: str) -> Cluster | None:
        async with self.db.engine.connect() as conn:
            query = select(CLUSTERS).where(CLUSTERS.c.id == cluster_id)
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _record(Cluster, row)

    async def view(self, cluster_id: str) -> ClusterView | None:
        """The cluster with its nodes (by priority) and parts (oldest first)."""
        async with self.db.engine.connect() as conn:
            query = select(CLUSTERS).where(CLUSTERS.c.id == cluster_id)
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return None
            nodes = await conn.execute(
                select(NODES)
                .where(NODES.c.cluster_id == cluster_id)
                .order_by(NODES.c.priority, NODES.c.created, NODES.c.id)
            )
            parts = await conn.execute(
                select(PARTS)
                .where(PARTS.c.cluster_id == cluster_id)
                .order_by(PARTS.c.created, PARTS.c.id)
            )
            view = ClusterView(_record(Cluster, row), [_record(Node, n) for n in nodes.mappings()])
            for part_row in parts.mappings():
                part = _part(part_row)
                if isinstance(part, Resource):
                    view.resources.append(part)
                elif isinstance(part, Service):
                    view.services.append(part)
                elif isinstance(part, FencingDevice):
                    view.fencing.append(part)
                else:
                    view.policies.append(part)
        return view

    async def set_state(self, cluster_id: str, state: str) -> None:
        values = {"state": state, "updated": time.time()}
        async with self.db.engine.begin() as conn:
            await conn.execute(update(CLUSTERS).where(CLUSTERS.c.id == cluster_id).values(values))

    async def delete_cluster(self, cluster_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            for table in (NODES, PARTS, HISTORY):
                await conn.execute(delete(table).where(table.c.cluster_id == cluster_id))
            gone = await conn.execute(delete(CLUSTERS).where(CLUSTERS.c.id == cluster_id))
        return bool(gone.rowcount)

    # --- nodes -----------------------------------------------------------------------

    async def add_node(self, node: Node) -> Node:
        """Raises `Taken` if the cluster has this server or host already."""
        node.created = time.time()
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(NODES.insert().values(**asdict(node)))
                await self._touch(conn, node.cluster_id)
        except IntegrityError as exc:
            raise Taken(f"{node.kind} {node.ref} is a node of this cluster already") from exc
        return node

    async def nodes_of(self, kind: str, *refs: str) -> list[Node]:
        """Every cluster's node that is one of these servers (or hosts): one query per
        thousand (a failed host's servers are asked about at once)."""
        found: list[Node] = []
        async with self.db.engine.connect() as conn:
            for at in range(0, len(refs), 1000):
                chunk = refs[at : at + 1000]
                query = select(NODES).where(NODES.c.kind == kind, NODES.c.ref.in_(chunk))
                found += [_record(Node, r) for r in (await conn.execute(query)).mappings()]
        return found

    async def set_node(self, node_id: str, **values: Any) -> None:
        """Change a node's `role` or `state`."""
        async with self.db.engine.begin() as conn:
            await conn.execute(update(NODES).where(NODES.c.id == node_id).values(**values))

    async def delete_node(self, cluster_id: str, node_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            query = delete(NODES).where(NODES.c.id == node_id, NODES.c.cluster_id == cluster_id)
            gone = await conn.execute(query)
            await self._touch(conn, cluster_id)
        return bool(gone.rowcount)

    # --- resources, services, fencing devices, policies ------------------------------

    async def add_part(self, part: Part) -> Part:
        part.created = time.time()
        doc = {k: v for k, v in asdict(part).items() if k not in _OWN}
        values = {
            "id": part.id,
            "cluster_id": part.cluster_id,
            "kind": kind_of(part),
            "created": part.created,
            "doc": doc,
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(PARTS.insert().values(**values))
            await self._touch(conn, part.cluster_id)
        return part

    async def delete_part(self, cluster_id: str, kind: str, part_id: str) -> bool:
        where = (PARTS.c.id == part_id, PARTS.c.cluster_id == cluster_id, PARTS.c.kind == kind)
        async with self.db.engine.begin() as conn:
            gone = await conn.execute(delete(PARTS).where(*where))
            await self._touch(conn, cluster_id)
        return bool(gone.rowcount)

    async def move_resources(self, cluster_id: str, from_node: str, to_node: str) -> None:
        """What `from_node` held is `to_node`'s now (the active role moved)."""
        mine = (PARTS.c.cluster_id == cluster_id, PARTS.c.kind == "resources")
        async with self.db.engine.begin() as conn:
            rows = (await conn.execute(select(PARTS).where(*mine))).mappings().all()
            for row in rows:
                if row["doc"].get("node_id") == from_node:
                    doc = {**row["doc"], "node_id": to_node}
                    query = update(PARTS).where(PARTS.c.id == row["id"])
                    await conn.execute(query.values(doc=doc))

    async def _touch(self, conn: Any, cluster_id: str) -> None:
        query = update(CLUSTERS).where(CLUSTERS.c.id == cluster_id)
        await conn.execute(query.values(updated=time.time()))

    # --- history ---------------------------------------------------------------------

    async def record(self, entry: HistoryEntry) -> None:
        """Keep one entry; a cluster keeps its newest `HISTORY_KEPT`."""
        entry.at = entry.at or time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(HISTORY.insert().values(**asdict(entry)))
            mine = HISTORY.c.cluster_id == entry.cluster_id
            oldest_kept = await conn.scalar(
                select(HISTORY.c.at)
                .where(mine)
                .order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
                .offset(HISTORY_KEPT - 1)
                .limit(1)
            )
            if oldest_kept is not None:
                await conn.execute(delete(HISTORY).where(mine, HISTORY.c.at < oldest_kept))

    async def history(
        self, cluster_id: str, limit: int, since: float | None = None
    ) -> list[HistoryEntry]:
        """Oldest first: the newest `limit` entries (after `since`, if given)."""
        query = (
            select(HISTORY)
            .where(HISTORY.c.cluster_id == cluster_id)
            .order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(HISTORY.c.at > since)
        async with self.db.engine.connect() as conn:
            rows = [_record(HistoryEntry, r) for r in (await conn.execute(query)).mappings()]
        return rows[::-1]
