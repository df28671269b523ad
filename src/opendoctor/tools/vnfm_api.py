"""The sample VNF manager's calls to opendoctor, as a project's application manager
makes them to Aodh and Fenix (DESIGN §5): its maintenance alarm, its constraints, the
instances a notice is about, and its replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from opendoctor.infra.httpclient import HttpClient, HttpError, Response
from opendoctor.tools.vnfm_notice import EVENT_TYPE, MIGRATE, Notice


class VnfmError(Exception):
    """Something the manager needed did not answer as it should; the notice goes
    unanswered (the session's default applies) and the status says why."""


@dataclass(slots=True)
class VnfmConfig:
    api: str  # opendoctor's API
    project: str
    user: str = "vnfm"
    migration_type: str = MIGRATE  # what it asks for its instances
    nack: frozenset[str] = frozenset()  # states it refuses (tests of refusal)
    silent: bool = False  # answers nothing (tests of defaults)
    constraints: bool = False  # PUT its instance group's and instances' constraints
    group_id: str | None = None
    recovery_time: int = 0
    lead_time: int = 0
    max_interruption_time: int = 120
    quiet: bool = False

    @property
    def headers(self) -> dict[str, str]:
        """Who it is to the API (trusted-headers identity)."""
        return {"X-Project-Id": self.project, "X-User-Id": self.user, "X-Roles": "member"}

    @property
    def group(self) -> str:
        return self.group_id or f"{self.project}-group"


def _is_url(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class OpendoctorApi:
    def __init__(self, config: VnfmConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http

    async def _request(self, method: str, url: str, body: Any = None) -> Response:
        try:
            return await self.http.request(method, url, json=body, headers=self.config.headers)
        except HttpError as exc:
            raise VnfmError(str(exc)) from exc

    async def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        """`method` on the API's `path`; the answer's JSON, VnfmError unless it is a
        success (or a status in `ok`)."""
        resp = await self._request(method, self.config.api.rstrip("/") + path, body)
        if not resp.ok and resp.status not in ok:
            raise VnfmError(f"{method} {path}: HTTP {resp.status} {resp.body[:200]!r}")
        try:
            return resp.json()
        except ValueError:
            return None

    async def create_alarm(self, callback_url: str) -> str:
        """The project's subscription to maintenance notices; its alarm id."""
        body = {
            "name": f"{self.config.project}-maintenance",
            "type": "event",
            "event_rule": {"event_type": EVENT_TYPE, "query": []},
            "alarm_actions": [callback_url],
            "repeat_actions": True,
        }
        created = await self.call("POST", "/v2/alarms", body)
        if not isinstance(created, dict) or not created.get("alarm_id"):
            raise VnfmError(f"the alarm was created but its id is missing: {str(created)[:200]}")
        return str(created["alarm_id"])

    async def delete_alarm(self, alarm_id: str) -> None:
        await self.call("DELETE", f"/v2/alarms/{alarm_id}", ok=(404,))

    async def put_group(self) -> None:
        """At most one member of its group hurt at a time: its pairs stay served."""
        group = self.config.group
        body = {
            "group_id": group,
            "project_id": self.config.project,
            "group_name": group,
            "anti_affinity_group": True,
            "max_instances_per_host": 0,
            "max_impacted_members": 1,
            "recovery_time": self.config.recovery_time,
            "resource_mitigation": False,
        }
        await self.call("PUT", f"/v1/instance_group/{group}", body)

    async def put_instance(self, instance_id: str, name: str) -> None:
        body = {
            "instance_id": instance_id,
            "project_id": self.config.project,
            "group_id": self.config.group,
            "instance_name": name,
            "migration_type": self.config.migration_type,
            "max_interruption_time": self.config.max_interruption_time,
            "lead_time": self.config.lead_time,
            "resource_mitigation": False,
        }
        await self.call("PUT", f"/v1/instance/{instance_id}", body)

    async def delete_instance(self, instance_id: str) -> None:
        await self.call("DELETE", f"/v1/instance/{instance_id}", ok=(404,))

    async def instance_ids(self, notice: Notice) -> list[str]:
        """The instances the notice is about: the list it carries, or the one its
        `instance_ids` URL answers."""
        value = notice.traits.get("instance_ids")
        if isinstance(value, list):
            return [str(v) for v in value]
        if not _is_url(value):
            raise VnfmError(f"instance_ids is neither a list nor a URL: {str(value)[:100]!r}")
        resp = await self._request("GET", value, {"session_id": notice.session_id})
        data = resp.json() if resp.ok else None
        ids = data.get("instance_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            raise VnfmError(f"GET {value}: HTTP {resp.status}, no instance_ids list")
        return [str(i) for i in ids]

    async def reply(self, notice: Notice, body: dict[str, Any]) -> Response:
        """PUT `body` on the notice's `reply_url`; the answer, whatever its status."""
        url = notice.traits.get("reply_url")
        if not _is_url(url):
            raise VnfmError(f"no usable reply_url: {str(url)[:100]!r}")
        return await self._request("PUT", url, body)
