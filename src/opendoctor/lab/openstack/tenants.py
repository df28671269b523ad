"""Tenants of the bed for the demos and benchmarks on real Nova: a project per VNF
owner with a user of its own (role `member`), and the servers that user boots.

A server belongs to the project of the token that boots it, so each tenant boots its
own: what Nova then reports as the server's `tenant_id` is what opendoctor tells the
owners by. Plain REST through the project's client, as `catalog` does.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from opendoctor.infra.httpclient import HttpError
from opendoctor.lab.openstack.catalog import (
    FLAVOR,
    IMAGE,
    NOVA_MICROVERSION,
    CatalogError,
    Session,
)

MEMBER = "member"


@dataclass(slots=True)
class Tenant:
    name: str
    project_id: str
    user_id: str
    session: Session  # the tenant's user, scoped to its project


async def _find(admin: Session, kind: str, name: str) -> str | None:
    data = await admin.call("GET", f"{admin.keystone}/{kind}s?name={name}")
    found = data[f"{kind}s"]
    return str(found[0]["id"]) if found else None


async def _role(admin: Session, name: str) -> str:
    role = await _find(admin, "role", name)
    if role is None:
        raise CatalogError(f"Keystone has no role {name!r}")
    return role


async def open_tenant(admin: Session, name: str) -> Tenant:
    """Project `name` with user `<name>-vnfm`, made now (or taken over from an earlier
    run, with a new password), and a token of that user in that project."""
    project = await _find(admin, "project", name) or await admin.create(
        "projects", "project", {"name": name, "domain_id": "default"}
    )
    user_name = f"{name}-vnfm"
    password = secrets.token_urlsafe(18)
    user = await _find(admin, "user", user_name)
    attrs = {"name": user_name, "password": password, "domain_id": "default"}
    if user is None:
        user = await admin.create("users", "user", attrs)
    else:
        await admin.call("PATCH", f"{admin.keystone}/users/{user}", {"user": attrs})
    member = await _role(admin, MEMBER)
    await admin.call("PUT", f"{admin.keystone}/projects/{project}/users/{user}/roles/{member}")
    session = await Session.login(admin.http, admin.keystone, password, user_name, name)
    return Tenant(name, project, user, session)


async def close_tenant(admin: Session, tenant: Tenant) -> None:
    """The tenant's user and project gone (its servers must be gone before)."""
    await admin.call("DELETE", f"{admin.keystone}/users/{tenant.user_id}")
    await admin.call("DELETE", f"{admin.keystone}/projects/{tenant.project_id}")


class Nova:
    """The few compute calls the demos make, as one session (a tenant or the admin);
    `urls` as the bed's state has them."""

    def __init__(self, session: Session, urls: dict[str, str]) -> None:
        self.session = session
        self.url = urls["nova"]
        self.glance = urls["glance"]

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return await self.session.call(method, self.url + path, body, NOVA_MICROVERSION)

    async def boot(self, name: str) -> str:
        """A server of the fake driver, without a network (the bed's Neutron wires
        nothing); its id. Nova's scheduler picks the host."""
        flavors = (await self.call("GET", "/flavors"))["flavors"]
        flavor = next((f["id"] for f in flavors if f["name"] == FLAVOR), None)
        images = await self.session.call("GET", f"{self.glance}/v2/images?name={IMAGE}")
        if flavor is None or not images["images"]:
            raise CatalogError(f"no flavor {FLAVOR!r} or image {IMAGE!r}: is the bed up?")
        server = {
            "name": name,
            "flavorRef": flavor,
            "imageRef": images["images"][0]["id"],
            "networks": "none",
        }
        data = await self.call("POST", "/servers", {"server": server})
        return str(data["server"]["id"])

    async def server(self, server_id: str) -> dict[str, Any] | None:
        try:
            data = await self.call("GET", f"/servers/{server_id}")
        except CatalogError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        found: dict[str, Any] = data["server"]
        return found

    async def wait(self, server_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
        """The server once Nova reports `status` (a server in ERROR fails at once)."""
        deadline = time.monotonic() + timeout
        while True:
            server = await self.server(server_id)
            now = None if server is None else server["status"]
            if now == status and server is not None:
                return server
            if now == "ERROR":
                fault = (server or {}).get("fault", {}).get("message", "")
                raise CatalogError(f"server {server_id} went to ERROR: {fault}")
            if time.monotonic() > deadline:
                raise CatalogError(f"server {server_id} not {status} after {timeout:.0f}s: {now}")
            await asyncio.sleep(0.5)

    async def delete(self, server_id: str, timeout: float = 60) -> None:
        """Delete and wait until Nova has forgotten it."""
        try:
            await self.call("DELETE", f"/servers/{server_id}")
        except (CatalogError, HttpError):
            if await self.server(server_id) is not None:
                raise
        deadline = time.monotonic() + timeout
        while await self.server(server_id) is not None:
            if time.monotonic() > deadline:
                raise CatalogError(f"server {server_id} not deleted after {timeout:.0f}s")
            await asyncio.sleep(0.5)
