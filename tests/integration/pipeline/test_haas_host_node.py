"""A host that runs no server and is a node of a host-level HA cluster: its failure still
reaches the HA engine (the inspector hands every downed host to recovery, with or without
servers), and the cluster's restart policy power-cycles it through its real BMC."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from opendoctor.lab.runner import LabRunner
from tests.conftest import eventually
from tests.integration.pipeline.conftest import ADMIN, host_down, lab_vim, serving, settings_for
from tests.integration.pipeline.test_fencing import devices, powered

pytestmark = pytest.mark.slow


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> str:
    resp = await client.post(path, json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    ident: str = resp.json()["id"]
    return ident


async def test_a_failed_host_node_without_servers_is_power_cycled(
    tmp_path: Path, bmcs: LabRunner
) -> None:
    vim = lab_vim()
    for server in [s for s in vim.servers.values() if s.host == "compute3"]:
        vim.delete_server(server.id)
    settings = settings_for(tmp_path, recovery={"fencing": {"devices": devices(bmcs)}})
    async with serving(settings, vim) as r:
        cluster = await _post(r.client, "/v1/clusters", {"name": "edge", "level": "host"})
        base = f"/v1/clusters/{cluster}"
        node = await _post(r.client, f"{base}/nodes", {"kind": "host", "ref": "compute3"})
        await _post(r.client, f"{base}/fencing-devices", {"node_id": node, "kind": "bmc"})
        policy = {"name": "cycle", "operation": "restart", "applies_to": "node", "timeout": 30}
        await _post(r.client, f"{base}/policies", policy)
        assert await powered(bmcs, "compute3")
        failed_at = time.time()

        await r.client.put("/events", json=[host_down("compute3")])

        async def cycled() -> list[dict[str, object]] | None:
            resp = await r.client.get(f"{base}/history", headers=ADMIN)
            entries: list[dict[str, object]] = resp.json()
            done = [e for e in entries if e["operation"] == "restart" and e["outcome"] == "ok"]
            return entries if done else None

        entries = await eventually(cycled, timeout=30)
        assert await powered(bmcs, "compute3")  # off, then on again
        assert all(float(str(e["at"])) >= failed_at - 1 for e in entries)
        assert not [e for e in entries if e["outcome"] == "failed"], entries
