"""Recovery methods: where the servers of a failed host may go, in what order of choice.

As Masakari defines them for a failover segment:

- `auto`: any usable host, as a VIM's scheduler would pick (Masakari leaves it to Nova),
  but not a reserved host nor one on maintenance of the segment;
- `reserved_host`: the segment's reserved hosts only (kept empty and disabled until a
  failure needs them; enabled then, and reserved no more);
- `auto_priority`: as `auto`, and the reserved hosts for what does not fit;
- `rh_priority`: the reserved hosts first, then as `auto`.

A usable host is up in the VIM, not forced down, not one of the failed hosts and not on
maintenance; apart from reserved hosts, also enabled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from opendoctor.core.model import Host
from opendoctor.core.segments import SegmentView


@dataclass(slots=True)
class Targets:
    """Candidate hosts in tiers, tried in order; `reserved` must be enabled before use."""

    tiers: list[list[str]]
    reserved: set[str] = field(default_factory=set)

    def describe(self) -> str:
        names = sorted({h for tier in self.tiers for h in tier})
        return ", ".join(names) if names else "no usable host"


def targets(
    method: str, segment: SegmentView | None, hosts: Iterable[Host], failed: set[str]
) -> Targets:
    alive = {
        h.name: h for h in hosts if h.state == "up" and not h.forced_down and h.name not in failed
    }
    if segment is None:
        auto = sorted(n for n, h in alive.items() if h.enabled)
        reserved: list[str] = []
    else:
        held = {m.name for m in segment.hosts if m.reserved or m.on_maintenance}
        auto = sorted(n for n, h in alive.items() if h.enabled and n not in held)
        reserved = sorted(
            m.name for m in segment.hosts if m.reserved and not m.on_maintenance and m.name in alive
        )
    tiers = {
        "auto": [auto],
        "reserved_host": [reserved],
        "auto_priority": [auto, reserved],
        "rh_priority": [reserved, auto],
    }[method]
    return Targets([t for t in tiers if t], set(reserved))
