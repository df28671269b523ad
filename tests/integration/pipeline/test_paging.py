"""Every list pages: `limit` items, the next page after `marker`, nothing twice or lost."""

from __future__ import annotations

from typing import Any

from tests.integration.pipeline.conftest import (
    ADMIN,
    PROJECT_A,
    Consumer,
    Running,
    as_project,
    host_down,
)
from tests.integration.pipeline.test_host_fault import register_all, settled_fault


async def pages(r: Running, path: str, key: str, limit: int, **params: Any) -> list[list[Any]]:
    """Walk the list page by page; each page's items by `key`."""
    headers = params.pop("headers", ADMIN)
    out: list[list[Any]] = []
    marker = None
    for _ in range(100):  # a marker that is not followed would go round for ever
        query = {"limit": limit, **params, **({"marker": marker} if marker else {})}
        resp = await r.client.get(path, headers=headers, params=query)
        assert resp.status_code == 200, resp.text
        items = resp.json()
        if not items:
            return out
        out.append([i[key] for i in items])
        assert len(items) <= limit
        marker = items[-1][key]
    raise AssertionError(f"{path}: no end to its pages")


async def whole(r: Running, path: str, key: str, **params: Any) -> list[Any]:
    headers = params.pop("headers", ADMIN)
    resp = await r.client.get(path, headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return [i[key] for i in resp.json()]


async def test_every_list_pages_through_the_same_items(
    running: Running, consumer: Consumer
) -> None:
    await register_all(running, consumer)
    for host in ("compute1", "compute2", "compute3"):
        await running.client.put("/events", json=[host_down(host)])
        await settled_fault(running, host)

    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("/v1/hosts", "name", {}),
        ("/v1/servers", "id", {}),
        ("/v1/servers", "id", {"headers": as_project(PROJECT_A)}),
        ("/v1/faults", "id", {}),
        ("/v1/faults", "id", {"status": "active"}),
        ("/v1/notifications", "id", {}),
        ("/v1/events", "id", {}),
        ("/v1/audit", "id", {}),
    ]
    for path, key, params in cases:
        everything = await whole(running, path, key, **params)
        assert len(everything) >= 3, (path, everything)
        walked = await pages(running, path, key, 2, **params)
        assert [k for page in walked for k in page] == everything, (path, params)
        assert len(walked) == (len(everything) + 1) // 2

    # A project sees its own servers only, page after page.
    theirs = await whole(running, "/v1/servers", "project_id", headers=as_project(PROJECT_A))
    assert set(theirs) == {PROJECT_A}


async def test_a_marker_that_names_nothing_is_a_400(running: Running) -> None:
    for path in ("/v1/faults", "/v1/notifications", "/v1/events", "/v1/faults?status=active"):
        sep = "&" if "?" in path else "?"
        resp = await running.client.get(f"{path}{sep}marker=nope", headers=ADMIN)
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json()["error"]["errors"][0]["field"] == "marker"
    # In-memory lists page by name: a marker past the end is an empty page, not an error.
    assert (await running.client.get("/v1/hosts?marker=zzz", headers=ADMIN)).json() == []
