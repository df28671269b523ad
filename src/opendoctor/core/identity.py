"""Who a request acts for (DESIGN.md §6): a project, a user, roles."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    project_id: str
    user_id: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def can_see(self, project_id: str) -> bool:
        return self.is_admin or project_id == self.project_id
