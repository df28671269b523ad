"""`LabClient`: the lab API from Python, answering with model dataclasses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opendoctor.core.model import Host, Server, ServerGroup, VimChange
from opendoctor.infra.http1 import Http1Client
from opendoctor.infra.httpclient import HttpError, Requester
from opendoctor.lab.statefile import STATE_FILE, read_state

CALL_TIMEOUT = 60.0  # evacuating onto a busy host waits for the VM to serve
RESET_BATCH = 1000  # servers per reset-state request (the lab takes up to 10,000)


def _q(segment: str) -> str:
    return quote(segment, safe="")


class LabError(Exception):
    """The lab refused or failed a request. `status` is its HTTP status when it has one.

    The lab's own error: the `lab` VIM driver (`opendoctor.controller.lab`) turns it into
    a `VimError`, so the lab depends on nothing of the blocks that use it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LabNotRunning(LabError):
    """No lab answers at the given place (no lab.json, or nothing listening)."""


def host_from_json(data: dict[str, Any]) -> Host:
    return Host(
        name=data["name"],
        address=data["address"],
        heartbeat_port=int(data["heartbeat_port"]),
        state=data["state"],
        forced_down=bool(data["forced_down"]),
        enabled=bool(data["enabled"]),
        alt_address=data.get("alt_address"),
        vcpus=int(data.get("vcpus", 0)),
        ram_mb=int(data.get("ram_mb", 0)),
        version=str(data.get("version") or ""),
    )


def server_from_json(data: dict[str, Any]) -> Server:
    return Server(
        id=data["id"],
        name=data["name"],
        host=data["host"],
        project_id=data["project_id"],
        status=data["status"],
        endpoint=data.get("endpoint"),
        metadata=dict(data.get("metadata") or {}),
        vcpus=int(data.get("vcpus", 0)),
        ram_mb=int(data.get("ram_mb", 0)),
    )


def group_from_json(data: dict[str, Any]) -> ServerGroup:
    return ServerGroup(
        id=data["id"],
        name=data["name"],
        project_id=data["project_id"],
        policy=data.get("policy") or "",
        members=tuple(data.get("members") or ()),
    )


def change_from_json(data: dict[str, Any]) -> VimChange:
    kind, obj = data["kind"], data["object"]
    if kind == "host":
        return VimChange(kind="host", op=data["op"], host=host_from_json(obj))
    return VimChange(kind="server", op=data["op"], server=server_from_json(obj))


def read_lab_state(state_dir: Path | str) -> dict[str, Any]:
    """The running lab's `lab.json`; `LabNotRunning` if there is none."""
    data = read_state(Path(state_dir))
    if data is None:
        raise LabNotRunning(f"no lab is running (no usable {Path(state_dir) / STATE_FILE})")
    return data


class LabClient:
    """Async client of one lab. Every method raises `LabError` when the lab says no."""

    def __init__(self, url: str, http: Requester | None = None) -> None:
        self.url = url.rstrip("/")
        self._own: Http1Client | None = None
        if http is None:
            # Its own lean client: a storm's VIM marks are thousands of small calls.
            http = self._own = Http1Client(timeout=CALL_TIMEOUT)
        self._http = http

    @classmethod
    def from_state_dir(cls, state_dir: Path | str, http: Requester | None = None) -> LabClient:
        return cls(read_lab_state(state_dir)["url"], http)

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()

    async def __aenter__(self) -> LabClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT
    ) -> Any:
        try:
            resp = await self._http.request(method, self.url + path, json=body, timeout=timeout)
        except HttpError as exc:
            raise LabNotRunning(f"lab at {self.url} unreachable: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.ok:
            return data
        message = f"{method} {path}: HTTP {resp.status}"
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = str(data["error"].get("message", message))
        raise LabError(message, resp.status)

    # ----- reading ------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """`{"ok": true, "seq": <latest change>}`."""
        result: dict[str, Any] = await self._call("GET", "/health", timeout=5.0)
        return result

    async def host_details(self) -> list[dict[str, Any]]:
        """Hosts as the lab knows them, with `alive` and `pid` (the lab's truth)."""
        result: list[dict[str, Any]] = await self._call("GET", "/hosts")
        return result

    async def hosts(self) -> list[Host]:
        return [host_from_json(h) for h in await self.host_details()]

    async def host(self, name: str) -> Host:
        return host_from_json(await self._call("GET", f"/hosts/{_q(name)}"))

    async def servers(self) -> list[Server]:
        return [server_from_json(s) for s in await self._call("GET", "/servers")]

    async def server(self, server_id: str) -> Server:
        return server_from_json(await self._call("GET", f"/servers/{_q(server_id)}"))

    async def server_details(self) -> list[dict[str, Any]]:
        """Servers as the lab's JSON, with the application's `role` and `healthy` flag."""
        result: list[dict[str, Any]] = await self._call("GET", "/servers")
        return result

    async def server_detail(self, server_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/servers/{_q(server_id)}")
        return result

    async def faults(self) -> list[dict[str, Any]]:
        """Injected faults: `{"host", "t00", "kind": "power-off" | "bmc-power-off" |
        "link-cut"}` for a host,
        `{"server_id", "server_name", "host", "t00", "kind": "vm-kill"}` for a VM."""
        result: list[dict[str, Any]] = await self._call("GET", "/faults")
        return result

    async def changes(
        self, since: int = 0, wait: float = 0.0, limit: int | None = None
    ) -> tuple[int, list[VimChange]]:
        """Changes after `since` (long-polling up to `wait` s), at most `limit`, and the
        sequence number to ask from next (the latest one's, or the last one given)."""
        path = f"/changes?since={since}&wait={wait}"
        if limit is not None:
            path += f"&limit={limit}"
        data = await self._call("GET", path, timeout=wait + 10)
        return int(data["seq"]), [change_from_json(c) for c in data["changes"]]

    # ----- hosts --------------------------------------------------------------------------

    async def force_down(self, host: str, down: bool = True) -> Host:
        body = {"forced_down": down}
        return host_from_json(await self._call("POST", f"/hosts/{_q(host)}/force-down", body))

    async def set_enabled(self, host: str, enabled: bool) -> Host:
        body = {"enabled": enabled}
        return host_from_json(await self._call("POST", f"/hosts/{_q(host)}/enabled", body))

    async def stage_version(self, host: str, version: str) -> dict[str, Any]:
        """The version `host` boots into at its next power-on (through its BMC or
        `restore_host`); its details, with `version` and `staged_version`."""
        path = f"/hosts/{_q(host)}/staged-version"
        result: dict[str, Any] = await self._call("PUT", path, {"version": version})
        return result

    async def fail_host(self, host: str) -> dict[str, Any]:
        """Power off a host (and its VMs); `{"host", "t00", "kind"}` with T00 just before."""
        result: dict[str, Any] = await self._call("POST", f"/hosts/{_q(host)}/fail")
        return result

    async def restore_host(self, host: str) -> Host:
        return host_from_json(await self._call("POST", f"/hosts/{_q(host)}/restore"))

    async def cut_link(self, host: str) -> dict[str, Any]:
        """Cut the link of a host's address: heartbeat probes there go unanswered while
        the host, its VMs and its alt address carry on. `{"host", "t00", "kind": "link-cut"}`."""
        result: dict[str, Any] = await self._call("POST", f"/hosts/{_q(host)}/cut-link")
        return result

    async def restore_link(self, host: str) -> Host:
        return host_from_json(await self._call("POST", f"/hosts/{_q(host)}/restore-link"))

    async def set_loss(self, host: str, fraction: float, path: str = "both") -> dict[str, Any]:
        """Drop that share (0 <= fraction < 1; 0: none) of a host's heartbeat answers at
        random, each on its own, on `path`: primary, alt or both. The host's details,
        with `heartbeat_loss` per path."""
        body = {"fraction": fraction, "path": path}
        result: dict[str, Any] = await self._call("PUT", f"/hosts/{_q(host)}/heartbeat-loss", body)
        return result

    # ----- servers ------------------------------------------------------------------------

    async def create_server(
        self,
        name: str,
        project_id: str,
        host: str | None = None,
        role: str | None = None,
        metadata: dict[str, str] | None = None,
        vcpus: int | None = None,
        ram_mb: int | None = None,
        *,
        services: list[str] | None = None,
        group: str | None = None,
    ) -> Server:
        """A new server; `role` ("active", the default, or "standby") is its application's;
        `metadata` the VIM's (HA_Enabled=True, ...), `vcpus` and `ram_mb` its flavor's;
        `services` the named services of its application, `group` a server group's id."""
        body: dict[str, Any] = {"name": name, "project_id": project_id}
        extra: dict[str, Any] = {"host": host, "role": role, "metadata": metadata}
        extra |= {"vcpus": vcpus, "ram_mb": ram_mb, "services": services, "group": group}
        body |= {k: v for k, v in extra.items() if v is not None}
        return server_from_json(await self._call("POST", "/servers", body))

    async def delete_server(self, server_id: str) -> None:
        await self._call("DELETE", f"/servers/{_q(server_id)}")

    async def reset_state(self, server_id: str, state: str) -> Server:
        body = {"state": state}
        path = f"/servers/{_q(server_id)}/reset-state"
        return server_from_json(await self._call("POST", path, body))

    async def reset_states(
        self, server_ids: Sequence[str], state: str
    ) -> tuple[list[Server], dict[str, str]]:
        """`reset_state` for many servers, in one request per `RESET_BATCH`: the servers
        set, and why the lab refused each other one."""
        done: list[Server] = []
        refused: dict[str, str] = {}
        for start in range(0, len(server_ids), RESET_BATCH):
            body = {"servers": list(server_ids[start : start + RESET_BATCH]), "state": state}
            answer = await self._call("POST", "/servers/reset-state", body)
            done += [server_from_json(s) for s in answer["servers"]]
            refused |= answer["refused"]
        return done, refused

    async def stop(self, server_id: str) -> Server:
        return server_from_json(await self._call("POST", f"/servers/{_q(server_id)}/stop"))

    async def start(self, server_id: str) -> Server:
        return server_from_json(await self._call("POST", f"/servers/{_q(server_id)}/start"))

    async def migrate(self, server_id: str, host: str | None = None) -> Server:
        body = {"host": host} if host is not None else {}
        path = f"/servers/{_q(server_id)}/migrate"
        return server_from_json(await self._call("POST", path, body))

    async def live_migrate(self, server_id: str, host: str | None = None) -> Server:
        """Move a running server to another host; it stays ACTIVE throughout."""
        body = {"host": host} if host is not None else {}
        path = f"/servers/{_q(server_id)}/live-migrate"
        return server_from_json(await self._call("POST", path, body))

    async def evacuate(self, server_id: str, host: str | None = None) -> Server:
        body = {"host": host} if host is not None else {}
        path = f"/servers/{_q(server_id)}/evacuate"
        return server_from_json(await self._call("POST", path, body))

    async def restart(self, server_id: str) -> Server:
        """Hard reboot: a new VM process on the same host, whatever the old one was doing."""
        return server_from_json(await self._call("POST", f"/servers/{_q(server_id)}/restart"))

    async def kill_server(self, server_id: str) -> dict[str, Any]:
        """SIGKILL the server's VM process: `{"server_id", "t00", ...}`, T00 just before.

        The VIM record is not changed; the host reports the exit to the events sink.
        """
        result: dict[str, Any] = await self._call("POST", f"/servers/{_q(server_id)}/kill")
        return result

    async def set_role(self, server_id: str, role: str) -> dict[str, Any]:
        """Make the server's application "active" (serves) or "standby" (answers 503)."""
        path = f"/servers/{_q(server_id)}/role"
        result: dict[str, Any] = await self._call("POST", path, {"role": role})
        return result

    async def set_health(
        self, server_id: str, healthy: bool, service: str | None = None
    ) -> dict[str, Any]:
        """Set the health flag the guest reports through its heartbeat (that of one of
        its named services, if `service`)."""
        path = f"/servers/{_q(server_id)}/health"
        body: dict[str, Any] = {"healthy": healthy}
        if service is not None:
            body["service"] = service
        result: dict[str, Any] = await self._call("POST", path, body)
        return result

    async def rebuild(self, server_id: str) -> Server:
        """Re-create the server's VM on its host: fresh process, same id and address."""
        return server_from_json(await self._call("POST", f"/servers/{_q(server_id)}/rebuild"))

    # ----- server groups ------------------------------------------------------------------

    async def server_groups(self) -> list[ServerGroup]:
        return [group_from_json(g) for g in await self._call("GET", "/server-groups")]

    async def create_server_group(
        self, name: str, project_id: str, policy: str = ""
    ) -> ServerGroup:
        body = {"name": name, "project_id": project_id, "policy": policy}
        return group_from_json(await self._call("POST", "/server-groups", body))

    async def delete_server_group(self, group_id: str) -> None:
        await self._call("DELETE", f"/server-groups/{_q(group_id)}")

    # ----- events sink --------------------------------------------------------------------

    async def set_events_sink(
        self, url: str | None, token: str | None = None, hostlink_url: str | None = None
    ) -> dict[str, Any]:
        """Where hosts `PUT` their events (None: nowhere) and link to the service (None:
        the events URL's `.../events` as `.../hostlink`); answers like `events_sink`."""
        body = {"url": url, "token": token, "hostlink_url": hostlink_url}
        result: dict[str, Any] = await self._call("PUT", "/events-sink", body)
        return result

    async def events_sink(self) -> dict[str, Any]:
        """`{"url", "token_set", "hosts": {name: {"pending", "delivered", ...}}}`."""
        result: dict[str, Any] = await self._call("GET", "/events-sink")
        return result

    # ----- load balancer ------------------------------------------------------------------

    async def lb_pools(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/lb/pools")
        return result

    async def lb_pool(self, pool_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/lb/pools/{_q(pool_id)}")
        return result

    async def create_pool(
        self, name: str, members: list[dict[str, Any] | str], vip_port: int | None = None
    ) -> dict[str, Any]:
        """A pool with a VIP of its own; a member is a server id, `{"server_id"}` or
        `{"address", "port"}`, optionally with `"admin_state_up"`."""
        specs = [{"server_id": m} if isinstance(m, str) else m for m in members]
        body: dict[str, Any] = {"name": name, "members": specs}
        if vip_port is not None:
            body["vip_port"] = vip_port
        result: dict[str, Any] = await self._call("POST", "/lb/pools", body)
        return result

    async def delete_pool(self, pool_id: str) -> None:
        await self._call("DELETE", f"/lb/pools/{_q(pool_id)}")

    async def add_member(self, pool_id: str, member: dict[str, Any] | str) -> dict[str, Any]:
        spec = {"server_id": member} if isinstance(member, str) else member
        path = f"/lb/pools/{_q(pool_id)}/members"
        result: dict[str, Any] = await self._call("POST", path, spec)
        return result

    async def delete_member(self, member_id: str) -> None:
        await self._call("DELETE", f"/lb/members/{_q(member_id)}")

    async def lb_members(self, pool: str | None = None) -> list[dict[str, Any]]:
        path = "/lb/members" + (f"?pool={_q(pool)}" if pool is not None else "")
        result: list[dict[str, Any]] = await self._call("GET", path)
        return result

    async def set_member(self, member_id: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a load-balancer member (its `admin_state_up`)."""
        path = f"/lb/members/{_q(member_id)}"
        result: dict[str, Any] = await self._call("POST", path, {"admin_state_up": enabled})
        return result
