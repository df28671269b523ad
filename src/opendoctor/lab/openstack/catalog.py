"""The bed's REST calls: the service users and the catalog (Keystone), the flavor and
image a test boots from (Nova, Glance), and the compute services' state for `status`.

Plain HTTP through the project's client: the bed's processes run from another venv,
and these few calls need no SDK in ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opendoctor.infra.httpclient import HttpClient, Response
from opendoctor.lab.openstack.spec import ADMIN, REGION, Secrets

# The catalog: service type, name, and the key of its URL in `configs.urls`.
SERVICES = (
    ("compute", "nova", "nova"),
    ("placement", "placement", "placement"),
    ("image", "glance", "glance"),
    ("network", "neutron", "neutron"),
)
FLAVOR = "m1.fake"
IMAGE = "fake-image"
NOVA_MICROVERSION = {
    "OpenStack-API-Version": "compute 2.53",
    "X-OpenStack-Nova-API-Version": "2.53",
}


class CatalogError(RuntimeError):
    pass


def _check(resp: Response, what: str) -> Any:
    if not resp.ok:
        raise CatalogError(f"{what}: HTTP {resp.status} {resp.body[:300]!r}")
    return resp.json()


@dataclass(slots=True)
class Session:
    """An admin token for the bed's REST calls."""

    http: HttpClient
    token: str
    keystone: str

    @classmethod
    async def login(
        cls,
        http: HttpClient,
        keystone: str,
        password: str,
        user: str = ADMIN,
        project: str = ADMIN,
    ) -> Session:
        """A token of `user` (default: the admin) scoped to `project` (names, in the
        default domain)."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        resp = await http.post(f"{keystone}/auth/tokens", json=body)
        _check(resp, f"a token of {user} in {project}")
        token = resp.headers.get("x-subject-token", "")
        if not token:
            raise CatalogError("Keystone answered without X-Subject-Token")
        return cls(http, token, keystone)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}

    async def call(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        resp = await self.http.request(
            method, url, json=body, headers=self.headers | (headers or {})
        )
        return _check(resp, f"{method} {url}")

    async def create(self, path: str, kind: str, attrs: dict[str, Any]) -> str:
        data = await self.call("POST", f"{self.keystone}/{path}", {kind: attrs})
        ident: str = data[kind]["id"]
        return ident


async def register(session: Session, urls: dict[str, str], secrets: Secrets) -> None:
    """The `service` project, a user per service (admin and service roles there), and
    each API's public and internal endpoints."""
    project = await session.create(
        "projects", "project", {"name": "service", "domain_id": "default"}
    )
    roles = {
        r["name"]: r["id"]
        for r in (await session.call("GET", f"{session.keystone}/roles"))["roles"]
    }
    if "service" not in roles:
        roles["service"] = await session.create("roles", "role", {"name": "service"})
    for user, password in secrets.services.items():
        uid = await session.create(
            "users", "user", {"name": user, "password": password, "domain_id": "default"}
        )
        for role in (ADMIN, "service"):
            await session.call(
                "PUT", f"{session.keystone}/projects/{project}/users/{uid}/roles/{roles[role]}"
            )
    for kind, name, key in SERVICES:
        sid = await session.create("services", "service", {"type": kind, "name": name})
        for interface in ("public", "internal"):
            await session.create(
                "endpoints",
                "endpoint",
                {"service_id": sid, "interface": interface, "url": urls[key], "region_id": REGION},
            )


async def flavor_and_image(session: Session, urls: dict[str, str]) -> None:
    """A flavor and an active image: what a server boots from. The fake driver reads
    neither, but Nova checks both."""
    await session.call(
        "POST",
        f"{urls['nova']}/flavors",
        {"flavor": {"name": FLAVOR, "ram": 128, "vcpus": 1, "disk": 1}},
    )
    image = await session.call(
        "POST",
        f"{urls['glance']}/v2/images",
        {"name": IMAGE, "disk_format": "raw", "container_format": "bare", "visibility": "public"},
    )
    resp = await session.http.request(
        "PUT",
        f"{urls['glance']}/v2/images/{image['id']}/file",
        headers=session.headers | {"content-type": "application/octet-stream"},
        content=b"\0" * 1024,
    )
    _check(resp, "image upload")


async def compute_services(session: Session, nova: str) -> list[dict[str, Any]]:
    data = await session.call(
        "GET", f"{nova}/os-services?binary=nova-compute", headers=NOVA_MICROVERSION
    )
    services: list[dict[str, Any]] = data["services"]
    return services
