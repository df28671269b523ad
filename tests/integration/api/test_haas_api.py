"""`/v1/clusters` in process over the memory VIM, in each auth mode: who may declare
what, the bounds (a 4xx naming the field, nothing changed), and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.api.conftest import Api, serving

VM1, VM2, VM3 = (f"00000000-0000-0000-0000-00000000000{j}" for j in (1, 3, 5))  # project-a
VM_B = "00000000-0000-0000-0000-000000000002"  # project-b


@pytest.fixture(params=["trusted-headers", "token"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async for running in serving(tmp_path, request.param):
        yield running


def field_of(resp: httpx.Response) -> str:
    errors = resp.json()["error"]["errors"]
    return str(errors[0]["field"])


async def post(api: Api, path: str, body: dict[str, Any], who: str = "a") -> httpx.Response:
    return await api.client.post(path, json=body, headers=api.who(who))


async def cluster(api: Api, who: str = "a", **body: Any) -> str:
    resp = await post(api, "/v1/clusters", {"name": "web", **body}, who)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def test_a_tenant_declares_a_cluster_of_its_servers_and_reads_it_back(api: Api) -> None:
    cid = await cluster(api, level="application", description="the web tier")
    base = f"/v1/clusters/{cid}"
    a = (await post(api, base + "/nodes", {"ref": VM1, "role": "active"})).json()
    b = (await post(api, base + "/nodes", {"ref": VM3, "role": "standby", "priority": 1})).json()
    svc = await post(api, base + "/services", {"name": "http", "guest_name": "nginx"})
    assert svc.status_code == 201, svc.text
    for body, kind in (
        (
            {
                "name": "vip",
                "kind": "ip",
                "properties": {"address": "10.0.0.9"},
                "node_id": a["id"],
            },
            "resources",
        ),
        ({"node_id": a["id"], "kind": "vim"}, "fencing-devices"),
        (
            {
                "name": "svc",
                "operation": "restart",
                "applies_to": "service",
                "services": ["http"],
                "retries": 2,
                "timeout": 5,
            },
            "policies",
        ),
        (
            {"name": "so", "operation": "switch-over", "domain": [b["id"]], "priority": 1},
            "policies",
        ),
    ):
        resp = await post(api, f"{base}/{kind}", body)
        assert resp.status_code == 201, resp.text
    shown = (await api.client.get(base, headers=api.who("a"))).json()
    assert (shown["name"], shown["level"], shown["project_id"]) == (
        "web",
        "application",
        "project-a",
    )
    assert [n["ref"] for n in shown["nodes"]] == [VM1, VM3]
    assert [p["name"] for p in shown["policies"]] == ["svc", "so"]
    assert shown["resources"][0]["properties"] == {"address": "10.0.0.9"}
    state = (await api.client.get(base + "/state", headers=api.who("a"))).json()
    assert (state["state"], state["active"]) == ("ok", [VM1])
    assert (await api.client.get(base + "/history", headers=api.who("a"))).json() == []
    listed = (await api.client.get("/v1/clusters", headers=api.who("a"))).json()
    assert [c["id"] for c in listed] == [cid]
    resp = await api.client.delete(
        f"{base}/policies/{shown['policies'][1]['id']}", headers=api.who("a")
    )
    assert resp.status_code == 204
    assert (await api.client.delete(base, headers=api.who("a"))).status_code == 204
    assert (await api.client.get(base, headers=api.who("a"))).status_code == 404


async def test_another_projects_cluster_and_servers_are_out_of_reach(api: Api) -> None:
    cid = await cluster(api)
    base = f"/v1/clusters/{cid}"
    for call in (
        api.client.get(base, headers=api.who("b")),
        api.client.get(base + "/state", headers=api.who("b")),
        api.client.delete(base, headers=api.who("b")),
        api.client.post(base + "/nodes", json={"ref": VM_B}, headers=api.who("b")),
    ):
        resp = await call
        assert resp.status_code == 404 and field_of(resp) == "cluster_id"
    assert (await api.client.get("/v1/clusters", headers=api.who("b"))).json() == []
    # Its own cluster may not take another project's server, nor one that is not there.
    for ref in (VM_B, "no-such-server"):
        resp = await post(api, base + "/nodes", {"ref": ref})
        assert (resp.status_code, field_of(resp)) == (400, "ref")
    # The admin sees every cluster.
    everyone = (await api.client.get("/v1/clusters", headers=api.who("admin"))).json()
    assert [c["id"] for c in everyone] == [cid]


async def test_hosts_and_the_clouds_own_levels_are_the_admins(api: Api) -> None:
    for level in ("host", "cloud-service"):
        resp = await post(api, "/v1/clusters", {"name": "x", "level": level})
        assert (resp.status_code, field_of(resp)) == (403, "level")
    resp = await post(api, "/v1/clusters", {"name": "x", "project_id": "project-b"})
    assert (resp.status_code, field_of(resp)) == (403, "project_id")
    cid = await cluster(api)
    resp = await post(api, f"/v1/clusters/{cid}/nodes", {"kind": "host", "ref": "compute1"})
    assert (resp.status_code, field_of(resp)) == (403, "kind")
    hid = await cluster(api, "admin", level="host")
    resp = await post(
        api, f"/v1/clusters/{hid}/nodes", {"kind": "host", "ref": "compute1"}, "admin"
    )
    assert resp.status_code == 201, resp.text
    node = resp.json()["id"]
    # A bmc fencing device needs a BMC known for the host: the memory VIM's have none.
    resp = await post(
        api, f"/v1/clusters/{hid}/fencing-devices", {"node_id": node, "kind": "bmc"}, "admin"
    )
    assert (resp.status_code, field_of(resp)) == (400, "kind")
    resp = await post(api, f"/v1/clusters/{hid}/nodes", {"ref": VM1}, "admin")
    assert (resp.status_code, field_of(resp)) == (400, "kind")


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("nodes", {"ref": VM1, "role": "leader"}, "role"),
        ("nodes", {"ref": VM1, "priority": 100_000}, "priority"),
        ("nodes", {"ref": "x" * 256}, "ref"),
        ("nodes", {"ref": VM1, "extra": 1}, "extra"),
        ("policies", {"name": "p", "operation": "reboot"}, "operation"),
        ("policies", {"name": "p", "operation": "restart", "timeout": 0}, "timeout"),
        ("policies", {"name": "p", "operation": "restart", "timeout": 99_999}, "timeout"),
        ("policies", {"name": "p", "operation": "restart", "retries": 11}, "retries"),
        ("policies", {"name": "p", "operation": "restart", "domain": ["compute1"]}, "domain"),
        ("policies", {"name": "p", "operation": "evacuate", "domain": ["nowhere"]}, "domain[0]"),
        ("policies", {"name": "p", "operation": "switch-over", "domain": ["x"]}, "domain[0]"),
        (
            "policies",
            {"name": "p", "operation": "restart", "applies_to": "service", "services": ["nope"]},
            "services[0]",
        ),
        ("policies", {"name": "p", "operation": "restart", "services": ["nope"]}, "services"),
        ("policies", {"name": "p\x00", "operation": "restart"}, "name"),
        ("policies", {"name": "p", "operation": "evacuate", "domain": ["compute1"] * 65}, "domain"),
        ("services", {"name": "s", "guest_name": "bad name"}, "guest_name"),
        ("services", {"name": "s", "guest_name": "ok", "node_ids": ["nope"]}, "node_ids[0]"),
        (
            "resources",
            {"name": "r", "kind": "ip", "properties": {str(i): "v" for i in range(33)}},
            "properties",
        ),
        ("resources", {"name": "r", "kind": "ip", "properties": {"a": "v" * 1001}}, "properties.a"),
        ("resources", {"name": "r", "kind": "ip", "node_id": "nope"}, "node_id"),
        ("fencing-devices", {"node_id": "nope", "kind": "vim"}, "node_id"),
        ("fencing-devices", {"node_id": "nope", "kind": "ipmi"}, "kind"),
    ],
)
async def test_out_of_bounds_is_refused_naming_the_field_and_nothing_changes(
    api: Api, kind: str, body: dict[str, Any], field: str
) -> None:
    cid = await cluster(api)
    before = (await api.client.get(f"/v1/clusters/{cid}", headers=api.who("a"))).json()
    resp = await post(api, f"/v1/clusters/{cid}/{kind}", body)
    assert resp.status_code == 400, resp.text
    assert field_of(resp) == field, resp.text
    after = (await api.client.get(f"/v1/clusters/{cid}", headers=api.who("a"))).json()
    assert after == before


async def test_conflicts_are_409s(api: Api) -> None:
    cid = await cluster(api)
    base = f"/v1/clusters/{cid}"
    assert (await post(api, base + "/nodes", {"ref": VM1, "role": "active"})).status_code == 201
    resp = await post(api, base + "/nodes", {"ref": VM1})
    assert (resp.status_code, field_of(resp)) == (409, "ref")
    resp = await post(api, base + "/nodes", {"ref": VM3, "role": "active"})
    assert (resp.status_code, field_of(resp)) == (409, "role")
    other = await cluster(api, name="other")
    resp = await post(api, f"/v1/clusters/{other}/nodes", {"ref": VM1})
    assert (resp.status_code, field_of(resp)) == (409, "ref")  # one cluster per server
    policy = {"name": "p", "operation": "restart"}
    assert (await post(api, base + "/policies", policy)).status_code == 201
    resp = await post(api, base + "/policies", policy)
    assert (resp.status_code, field_of(resp)) == (409, "name")


async def test_an_unknown_marker_and_no_identity_are_refused(api: Api) -> None:
    resp = await api.client.get("/v1/clusters?marker=nope", headers=api.who("a"))
    assert (resp.status_code, field_of(resp)) == (400, "marker")
    resp = await api.client.get("/v1/clusters")
    assert resp.status_code == 401


async def test_the_openapi_document_declares_every_error(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    paths = {p: ops for p, ops in doc["paths"].items() if p.startswith("/v1/clusters")}
    assert len(paths) == 14
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"400", "401", "403", "404", "413", "503"} <= statuses, (path, method)
            if method == "post":
                assert "409" in statuses, path
    body = doc["paths"]["/v1/clusters/{cluster_id}/policies"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PolicyIn"
    }
