"""What the sample VNF manager does with each maintenance notice, and what it answers.

It speaks to opendoctor as a project's application manager would to Fenix (DESIGN §5):
an event alarm on `maintenance.scheduled`, the instance list of a session, replies on
the session's `reply_url`, and optionally its instances' constraints. Its application is
on the lab: active/standby pairs behind a load balancer (switched over before an active
is moved, `opendoctor.tools.switchover`) and extra servers it gives up while hosts are
short (SCALE_IN) and creates again when the maintenance is over.

Notices are handled one at a time, in the order they came: a session asks one thing at
a time, and the pairs must not be switched by two notices at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opendoctor.infra.httpclient import HttpClient
from opendoctor.infra.tasks import Background
from opendoctor.lab.client import LabClient, LabError
from opendoctor.tools.switchover import Switcher
from opendoctor.tools.vnfm_api import OpendoctorApi, VnfmConfig, VnfmError
from opendoctor.tools.vnfm_notice import (
    INSTANCE_ACTION_DONE,
    LIVE_MIGRATE,
    MAINTENANCE,
    MAINTENANCE_COMPLETE,
    MIGRATE,
    OWN_ACTION,
    PLANNED_MAINTENANCE,
    PREPARE_MAINTENANCE,
    SCALE_IN,
    Notice,
)

log = logging.getLogger(__name__)

KEEP = 1000  # entries kept per list of the status: a manager may run for months


def _keep(entries: list[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
    entries.append(entry)
    del entries[:-KEEP]
    return entry


class VnfManager:
    def __init__(
        self,
        config: VnfmConfig,
        lab: LabClient | None = None,
        pairs: dict[str, str] | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.config = config
        self.lab = lab
        self.switcher = Switcher(lab, pairs) if lab is not None else None
        self._own_http = http is None
        self.api = OpendoctorApi(config, http if http is not None else HttpClient(timeout=10.0))
        self.alarm_id: str | None = None
        self.notices: list[dict[str, Any]] = []
        self.repeats: list[str] = []
        self.replies: list[dict[str, Any]] = []
        self.actions_done: list[dict[str, Any]] = []
        self.scaled_in: list[dict[str, Any]] = []
        self.own_moves: list[dict[str, Any]] = []  # standbys moved ahead of their active
        self.scaled_out: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._to_recreate: list[dict[str, Any]] = []  # lab details of servers scaled in
        self._seen: dict[str, None] = {}  # message ids, oldest first
        self._queue: asyncio.Queue[tuple[Notice, dict[str, Any]]] = asyncio.Queue()
        self._background = Background()

    # -- life ------------------------------------------------------------------------------

    async def start(self, callback_url: str) -> None:
        """Subscribe to the project's maintenance notices at `callback_url`."""
        self.alarm_id = await self.api.create_alarm(callback_url)
        if self.config.constraints:
            await self.api.put_group()
            for server in await self._servers():
                await self.api.put_instance(server["id"], server["name"])
        self._background.spawn(self._work())

    async def close(self) -> None:
        await self._background.close()
        alarm_id, self.alarm_id = self.alarm_id, None
        if alarm_id is not None:
            # Best effort: a manager started again would be told everything twice.
            try:
                await self.api.delete_alarm(alarm_id)
            except VnfmError as exc:
                log.warning("maintenance alarm not deleted", extra={"error": str(exc)})
        if self.switcher is not None:
            await self.switcher.close()  # and the lab client
        if self._own_http:
            await self.api.http.close()

    # -- notices ---------------------------------------------------------------------------

    def accept(self, notice: Notice) -> bool:
        """Take a notice for handling; False if it is one already taken (a redelivery)."""
        key = notice.message_id
        if key and key in self._seen:
            self.repeats.append(key)
            del self.repeats[:-KEEP]
            return False
        if key:  # without one, every notice counts as new
            self._seen[key] = None
            while len(self._seen) > 4 * KEEP:
                del self._seen[next(iter(self._seen))]
        entry = _keep(
            self.notices,
            {
                "state": notice.state,
                "session_id": notice.session_id,
                "received": notice.received,
                "message_id": notice.message_id,
                "handled": None,
            },
        )
        self._queue.put_nowait((notice, entry))
        self._say(f"notice {notice.state} of session {notice.session_id}")
        return True

    async def _work(self) -> None:
        while True:
            notice, entry = await self._queue.get()
            try:
                await self._handle(notice)
            except Exception as exc:  # the next notice must still be handled
                what = str(exc)
                if not isinstance(exc, VnfmError):
                    what = f"{exc.__class__.__name__}: {what}"
                self._error(notice, what)
                log.warning("maintenance notice not handled", extra={"error": what})
            entry["handled"] = time.time()

    async def _handle(self, notice: Notice) -> None:
        state = notice.state
        project = notice.traits.get("project_id")
        if project not in (None, self.config.project):
            raise VnfmError(f"the notice is for project {project}, not {self.config.project}")
        if self.config.silent:
            return
        if state in self.config.nack:
            # A refusal: nothing is done for it either.
            await self._reply(notice, f"NACK_{state}")
        elif state == MAINTENANCE:
            ids = await self.api.instance_ids(notice)
            await self._reply(notice, "ACK_MAINTENANCE", instance_ids=ids)
        elif state == SCALE_IN:
            gone = await self._scale_in(notice)
            ids = [i for i in await self.api.instance_ids(notice) if i not in gone]
            await self._reply(notice, "ACK_SCALE_IN", instance_ids=ids)
        elif state in (PREPARE_MAINTENANCE, PLANNED_MAINTENANCE):
            await self._make_way(notice)
        elif state == INSTANCE_ACTION_DONE:
            await self._instance_done(notice)
        elif state == MAINTENANCE_COMPLETE:
            await self._scale_out(notice)
            await self._reply(notice, "ACK_MAINTENANCE_COMPLETE")

    async def _instance_done(self, notice: Notice) -> None:
        # opendoctor names the instance moved; Fenix's notice carries a list.
        instance, listed = notice.traits.get("instance_id"), notice.traits.get("instance_ids")
        done: list[Any] = [instance] if instance else []
        if not done and isinstance(listed, list):
            done = listed
        for instance_id in map(str, done):
            record = {"instance_id": instance_id, "session_id": notice.session_id}
            _keep(self.actions_done, record | {"at": notice.received})
        if notice.traits.get("reply_url"):  # nobody waits for it; harmless all the same
            await self._reply(notice, "ACK_INSTANCE_ACTION_DONE")

    async def _make_way(self, notice: Notice) -> None:
        """Switch each pair whose active is to move over to its standby, then say how each
        instance is to be moved."""
        allowed = notice.traits.get("allowed_actions")
        action = self._action(allowed)
        if action is None:
            self._error(notice, f"{self.config.migration_type} and MIGRATE are not allowed")
            await self._reply(notice, f"NACK_{notice.state}")
            return
        ids = await self.api.instance_ids(notice)
        moving = set(ids)
        own_ok = not isinstance(allowed, list) or not allowed or OWN_ACTION in allowed
        moved: set[str] = set()  # standbys it took off the host itself
        for instance_id in ids:
            # A standby moved off already serves now: it is not to be switched away from.
            if instance_id not in moved:
                await self._switch_away(instance_id, moving, moved if own_ok else None, notice)
        actions = {i: OWN_ACTION if i in moved else action for i in ids}
        await self._reply(notice, f"ACK_{notice.state}", instance_actions=actions)

    def _action(self, allowed: Any) -> str | None:
        """Its preferred action if the session allows it; else a migration it allows."""
        if not isinstance(allowed, list) or not allowed:
            return self.config.migration_type  # nothing said: nothing ruled out
        allowed = [str(a) for a in allowed]
        if self.config.migration_type in allowed:
            return self.config.migration_type
        # Never OWN_ACTION in its stead: it moves only a standby ahead of its active.
        return next((a for a in (MIGRATE, LIVE_MIGRATE) if a in allowed), None)

    async def _switch_away(
        self, active: str, moving: set[str], moved: set[str] | None, notice: Notice
    ) -> None:
        """Switch `active`'s pair over to its standby before the active moves. A standby
        on the same host goes first, moved by this manager (OWN_ACTION, if the session
        allows it, into `moved`): otherwise the session may move the serving half while
        the other is on its way too."""
        switcher = self.switcher
        if switcher is None or active not in switcher.pairs:
            return
        standby = switcher.pairs[active]
        if standby in moving:
            if moved is None or not await self._move_first(standby, notice):
                self._error(notice, f"not switched over: {active}'s standby is to move too")
                return
            moved.add(standby)
        record = switcher.claim(active, time.time(), reason="maintenance")
        if record is not None:
            # A standby that cannot serve is not switched to (the switch-over's error says
            # so); the instance is given up all the same: the session does not wait on it.
            await switcher.switch(record, demote=True)
            self._say(f"switched {active} over to {record.standby}: {record.error or 'done'}")

    async def _move_first(self, standby: str, notice: Notice) -> bool:
        """Migrate `standby` off the host being emptied (the VIM picks where: not that
        host, which is disabled); False if it could not."""
        assert self.lab is not None  # pairs are switched through the lab
        started = time.time()
        try:
            before = (await self.lab.server(standby)).host
            server = await self.lab.migrate(standby)
        except LabError as exc:
            self._error(notice, f"{standby} not moved ahead of its active: {exc}")
            return False
        entry = {"instance_id": standby, "from": before, "to": server.host, "started": started}
        _keep(self.own_moves, entry | {"session_id": notice.session_id, "done": time.time()})
        self._say(f"moved standby {standby} from {before} to {server.host} itself")
        return True

    # -- scaling ---------------------------------------------------------------------------

    async def _servers(self) -> list[dict[str, Any]]:
        """Its servers on the lab, oldest first (the lab lists them in creation order)."""
        if self.lab is None:
            return []
        servers = await self.lab.server_details()
        return [s for s in servers if s["project_id"] == self.config.project]

    async def _scale_in(self, notice: Notice) -> set[str]:
        """Give up the newest server that is not in a pair; the ids given up."""
        if self.lab is None or self.switcher is None:
            return set()
        paired = set(self.switcher.pairs) | set(self.switcher.pairs.values())
        extra = [s for s in await self._servers() if s["id"] not in paired]
        if not extra:
            return set()
        victim = extra[-1]
        await self.lab.delete_server(victim["id"])
        self._to_recreate.append(victim)
        entry = {"id": victim["id"], "name": victim["name"], "host": victim.get("host")}
        _keep(self.scaled_in, entry | {"session_id": notice.session_id, "at": time.time()})
        self._say(f"scaled in: deleted {victim['name']} ({victim['id']})")
        if self.config.constraints:
            await self.api.delete_instance(victim["id"])
        return {victim["id"]}

    async def _scale_out(self, notice: Notice) -> None:
        """Create again the servers given up; one that fails stays for the next time."""
        if self.lab is None:
            return
        for old in list(self._to_recreate):
            try:
                server = await self.lab.create_server(
                    old["name"],
                    self.config.project,
                    metadata=old.get("metadata") or None,
                    vcpus=old.get("vcpus"),
                    ram_mb=old.get("ram_mb"),
                )
                if self.config.constraints:
                    await self.api.put_instance(server.id, server.name)
            except Exception as exc:
                self._error(notice, f"{old['name']} not created again: {exc}")
                continue
            self._to_recreate.remove(old)
            entry = {"id": server.id, "name": server.name, "replaces": old["id"]}
            _keep(self.scaled_out, entry | {"session_id": notice.session_id, "at": time.time()})
            self._say(f"scaled out: created {server.name} ({server.id})")

    # -- answering ------------------------------------------------------------------------

    async def _reply(self, notice: Notice, state: str, **fields: Any) -> None:
        body = {"session_id": notice.session_id, "state": state, **fields}
        entry = _keep(self.replies, body | {"sent": time.time(), "status": None})
        try:
            resp = await self.api.reply(notice, body)
        except VnfmError as exc:
            entry["error"] = str(exc)
            raise
        entry["status"] = resp.status
        if not resp.ok:
            entry["error"] = resp.body[:300].decode(errors="replace")
        self._say(f"replied {state}: HTTP {resp.status}")

    # -- what it did -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "project": self.config.project,
            "alarm_id": self.alarm_id,
            "pairs": dict(self.switcher.pairs) if self.switcher is not None else {},
            "notices": self.notices,
            "repeats": self.repeats,
            "replies": self.replies,
            "switchovers": self.switcher.report() if self.switcher is not None else [],
            "own_moves": self.own_moves,
            "scaled_in": self.scaled_in,
            "scaled_out": self.scaled_out,
            "instance_action_done": self.actions_done,
            "errors": self.errors,
        }

    def _error(self, notice: Notice, what: str) -> None:
        entry = {"state": notice.state, "session_id": notice.session_id, "error": what}
        _keep(self.errors, entry | {"at": time.time()})

    def _say(self, what: str) -> None:
        if not self.config.quiet:
            print(f"vnfm {self.config.project}: {what}", flush=True)
