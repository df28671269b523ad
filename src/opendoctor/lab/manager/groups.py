"""The lab VIM's server groups: named sets of a project's servers, as Nova keeps them.

A server joins a group when it is created with `group` and leaves it when it is
deleted. The policy is recorded as Nova records it (affinity, anti-affinity and their
soft forms) but placement does not act on it: the lab places by load. Server-group
messaging reaches a server's group peers through these records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from opendoctor.lab.manager.records import LabError

POLICIES = ("", "affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
MAX_GROUPS = 1000
MAX_MEMBERS = 1000
MAX_NAME = 255


@dataclass(slots=True)
class GroupRecord:
    id: str
    name: str
    policy: str
    project_id: str
    members: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "policy": self.policy,
            "project_id": self.project_id,
            "members": list(self.members),
        }


class ServerGroups:
    def __init__(self) -> None:
        self.groups: dict[str, GroupRecord] = {}

    def get(self, group_id: str) -> GroupRecord:
        try:
            return self.groups[group_id]
        except KeyError:
            raise LabError(404, f"no server group with id {group_id!r}") from None

    def create(self, name: str, policy: str, project_id: str) -> GroupRecord:
        if not 0 < len(name) <= MAX_NAME or not name.isprintable():
            raise LabError(400, f"'name' must be 1 to {MAX_NAME} printable characters")
        if policy not in POLICIES:
            raise LabError(
                400, f"'policy' must be one of {', '.join(p or '(none)' for p in POLICIES)}"
            )
        if not 0 < len(project_id) <= MAX_NAME:
            raise LabError(400, f"'project_id' must be 1 to {MAX_NAME} characters")
        if len(self.groups) >= MAX_GROUPS:
            raise LabError(409, f"the lab keeps at most {MAX_GROUPS} server groups")
        group = GroupRecord(str(uuid.uuid4()), name, policy, project_id)
        self.groups[group.id] = group
        return group

    def delete(self, group_id: str) -> None:
        self.get(group_id)
        del self.groups[group_id]

    def check_join(self, group_id: str, project_id: str) -> GroupRecord:
        """The group a new server of `project_id` may join; a 400 naming `group` if not."""
        group = self.groups.get(group_id)
        if group is None:
            raise LabError(400, f"'group': no server group with id {group_id!r}")
        if group.project_id != project_id:
            raise LabError(400, f"'group': server group {group.name} is another project's")
        if len(group.members) >= MAX_MEMBERS:
            raise LabError(409, f"server group {group.name} has {MAX_MEMBERS} members already")
        return group

    def join(self, group_id: str, server_id: str) -> None:
        group = self.groups.get(group_id)
        if group is not None and server_id not in group.members:
            group.members.append(server_id)

    def leave(self, server_id: str) -> None:
        for group in self.groups.values():
            if server_id in group.members:
                group.members.remove(server_id)

    def to_json(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in self.groups.values()]
