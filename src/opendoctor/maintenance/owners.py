"""The owners' side of a session: notices on `maintenance.scheduled` through each
project's event alarms (DESIGN §5), and waiting for their answers or the default.

Trait values that are lists or dicts go as JSON text (Doctor's app manager reads them
with a YAML load, which reads JSON too). `instance_ids` is a URL: the owner GETs it and
reads the ids, as Fenix's API has it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from opendoctor.core.maintenance import (
    INSTANCE_ACTIONS,
    ProjectProgress,
    Session,
)
from opendoctor.core.model import NotificationEvent
from opendoctor.maintenance.reach import Reach

SCHEDULED = "maintenance.scheduled"
HOST_EVENT = "maintenance.host"


def fenix_time(at: float) -> str:
    """`YYYY-MM-DD HH:MM:SS`, UTC, as Fenix writes `actions_at` and `maintenance_at`."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _message_id(*parts: str) -> str:
    # Stable per notice: one sent again after a restart reaches its owner as the same one.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class Owners:
    def __init__(self, reach: Reach, session: Session) -> None:
        self.reach = reach
        self.session = session

    def project_url(self, project_id: str) -> str:
        return f"{self.reach.base_url}/v1/maintenance/{self.session.session_id}/{project_id}"

    async def ask(
        self,
        state: str,
        projects: dict[str, list[str]],
        deadline: float,
        round_key: str = "",
    ) -> None:
        """Send `state` to each project (with the instances it is about) unless it was
        already asked this very round (a session resumed after a restart)."""
        session = self.session
        events = []
        for project_id, about in projects.items():
            progress = session.projects.setdefault(project_id, ProjectProgress(project_id))
            key = f"{state}/{round_key}"
            if progress.asked == state and progress.about == about and progress.deadline:
                continue  # asked before a restart: its answer (or the default) stands
            progress.asked, progress.asked_at, progress.deadline = state, time.time(), deadline
            progress.reply, progress.replied_at, progress.defaulted = None, None, False
            progress.about = list(about)
            events.append(self._notice(state, project_id, deadline, key))
        if events:
            session.note(f"asked {len(events)} projects {state}")
            sent = await self.reach.notify.notify_many([(events, {"event_type": SCHEDULED})])
            await self.reach.notify.landed(sent)

    def _notice(self, state: str, project_id: str, deadline: float, key: str) -> NotificationEvent:
        session = self.session
        url = self.project_url(project_id)
        return NotificationEvent.build(
            SCHEDULED,
            message_id=_message_id(session.session_id, project_id, key),
            project_id=project_id,
            state=state,
            session_id=session.session_id,
            instance_ids=url,
            reply_url=url,
            actions_at=fenix_time(deadline),
            allowed_actions=json.dumps(list(INSTANCE_ACTIONS)),
            metadata=json.dumps(session.metadata),
        )

    async def tell(self, state: str, project_id: str, instance_id: str, host: str = "") -> None:
        """A notice that asks nothing (INSTANCE_ACTION_DONE): it carries no `reply_url`,
        as no answer is waited for."""
        session = self.session
        event = NotificationEvent.build(
            SCHEDULED,
            message_id=_message_id(session.session_id, project_id, state, instance_id, host),
            project_id=project_id,
            state=state,
            session_id=session.session_id,
            instance_ids=self.project_url(project_id),
            instance_id=instance_id,
            metadata=json.dumps(session.metadata),
        )
        await self.reach.notify.notify_many([([event], {"event_type": SCHEDULED})])

    async def host_notice(self, host: str, state: str) -> None:
        """`maintenance.host` to the infrastructure's alarms (an event of no project)."""
        event = NotificationEvent.build(
            HOST_EVENT,
            message_id=_message_id(self.session.session_id, host, state),
            host=host,
            state=state,
            session_id=self.session.session_id,
            metadata=json.dumps(self.session.metadata),
        )
        await self.reach.notify.notify_many([([event], {"event_type": HOST_EVENT})])

    def pending(self, projects: Iterable[str]) -> list[str]:
        """Of `projects`, those that have not answered and whose deadline has not passed."""
        now = time.time()
        out = []
        for project_id in projects:
            p = self.session.projects[project_id]
            if p.reply is None and (p.deadline is None or p.deadline > now):
                out.append(project_id)
        return out

    def settle_defaults(self, projects: Iterable[str]) -> list[str]:
        """Mark those that did not answer in time as defaulted; returns them."""
        out = []
        for project_id in projects:
            p = self.session.projects[project_id]
            if p.reply is None and not p.defaulted:
                p.defaulted = True
                p.defaults.append(p.asked or "")
                out.append(project_id)
        if out:
            self.session.note(f"no answer from {', '.join(sorted(out))}: defaults apply")
        return out

    def refused(self, projects: Iterable[str]) -> list[str]:
        return [p for p in projects if (self.session.projects[p].reply or "").startswith("NACK_")]
