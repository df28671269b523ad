"""Admission control: which host each recovered server goes to, within what it can run.

A VIM scheduler asked to evacuate twenty servers at once places each as if it were alone,
and a host can end up beyond its capacity, or the last servers find no room and fail
one by one. Here every target is chosen before the first call, against the host's
capacity less what runs on it and what this recovery already sent there; a server that
fits nowhere is reported as such at once, not lost in a late failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opendoctor.core.model import Host, Server


@dataclass(slots=True)
class Room:
    """A host's free capacity; None where the VIM does not say (no limit known)."""

    host: str
    vcpus: int | None
    ram_mb: int | None

    def fits(self, server: Server) -> bool:
        return (self.vcpus is None or server.vcpus <= self.vcpus) and (
            self.ram_mb is None or server.ram_mb <= self.ram_mb
        )

    def take(self, server: Server) -> None:
        if self.vcpus is not None:
            self.vcpus -= server.vcpus
        if self.ram_mb is not None:
            self.ram_mb -= server.ram_mb

    def give_back(self, server: Server) -> None:
        if self.vcpus is not None:
            self.vcpus += server.vcpus
        if self.ram_mb is not None:
            self.ram_mb += server.ram_mb

    @property
    def spare(self) -> tuple[float, float]:
        """For choosing the emptiest host: unknown counts as plenty."""
        inf = float("inf")
        return (
            inf if self.ram_mb is None else self.ram_mb,
            inf if self.vcpus is None else self.vcpus,
        )


class Placement:
    """The free room of candidate hosts, taken as servers are assigned to them."""

    def __init__(self, hosts: Iterable[Host], running: Callable[[str], list[Server]]) -> None:
        self.rooms: dict[str, Room] = {}
        self.assigned: dict[str, int] = {}
        for host in hosts:
            on = running(host.name)
            self.rooms[host.name] = Room(
                host.name,
                host.vcpus - sum(s.vcpus for s in on) if host.vcpus else None,
                host.ram_mb - sum(s.ram_mb for s in on) if host.ram_mb else None,
            )
            self.assigned[host.name] = len(on)

    def choose(self, server: Server, candidates: Iterable[str], tried: set[str]) -> str | None:
        """The candidate with the most room left that fits `server` (ties: the one given
        fewest servers), taken for it; None if none fits."""
        fitting = [
            self.rooms[h]
            for h in candidates
            if h in self.rooms and h not in tried and self.rooms[h].fits(server)
        ]
        if not fitting:
            return None
        best = max(fitting, key=lambda r: (r.spare, -self.assigned[r.host]))
        best.take(server)
        self.assigned[best.host] += 1
        return best.host

    def release(self, server: Server, host: str) -> None:
        """`server` did not go to `host` after all (the VIM refused): its room is free."""
        self.rooms[host].give_back(server)
        self.assigned[host] -= 1
