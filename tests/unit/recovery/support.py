"""What the recovery unit tests build on: the memory VIM, BMCs and segments behind the
same protocols as the real ones (Redfish and IPMI devices, the segment store), and a
notify target that records what recovery would tell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.faults import Fault
from opendoctor.core.model import Host, NotificationEvent, Server
from opendoctor.core.notifications import Batch, OutboxEntry
from opendoctor.core.ports import FenceError
from opendoctor.core.recovery_settings import FencingSettings, RecoverySettings
from opendoctor.core.segments import Segment, SegmentHost, SegmentView
from opendoctor.infra.httpclient import HttpClient
from opendoctor.recovery.evacuation import Recovery
from opendoctor.recovery.fencing import Fencing
from opendoctor.recovery.guard import FenceGuard


class Bmc:
    """A BMC whose first `failures` power-offs fail; then it powers off at once."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.power = "on"
        self.offs = 0

    async def power_state(self) -> str:
        return self.power

    async def power_off(self) -> None:
        self.offs += 1
        if self.failures > 0:
            self.failures -= 1
            raise FenceError("the BMC did not answer")
        self.power = "off"

    async def power_on(self) -> None:
        self.power = "on"

    async def close(self) -> None:
        return None


class Segments:
    """Segments in memory, behind `SegmentSource`."""

    def __init__(self, *views: SegmentView) -> None:
        self.views = list(views)

    async def segment_of(self, host: str) -> SegmentView | None:
        return next((v for v in self.views if v.host(host) is not None), None)

    async def set_reserved(self, segment_id: str, host: str, reserved: bool) -> None:
        for view in self.views:
            member = view.host(host)
            if view.segment.id == segment_id and member is not None:
                member.reserved = reserved


def segment(method: str, *members: tuple[str, bool], all_servers: bool = False) -> SegmentView:
    seg = Segment("seg", recovery_method=method, all_servers=all_servers)  # type: ignore[arg-type]
    return SegmentView(seg, [SegmentHost(n, seg.id, reserved=r) for n, r in members])


class Told:
    """Records what would be sent to the owners' and operators' alarms."""

    def __init__(self) -> None:
        self.events: list[NotificationEvent] = []

    async def notify_many(self, batches: Sequence[Batch]) -> list[OutboxEntry]:
        for events, _ in batches:
            self.events.extend(events)
        return []

    async def landed(self, entries: Sequence[OutboxEntry]) -> None:
        return None


def hosts(*names: str, vcpus: int = 0, **kinds: Any) -> list[Host]:
    """Hosts named `names`: compute1 dead (forced down), the others up; reserved ones
    (given as reserved=[...]) disabled."""
    reserved = set(kinds.get("reserved", ()))
    return [
        Host(
            n,
            f"127.0.1.{i}",
            forced_down=n == "compute1",
            state="down" if n == "compute1" else "up",
            enabled=n not in reserved,
            vcpus=vcpus,
        )
        for i, n in enumerate(names, 1)
    ]


def servers(n: int, host: str = "compute1", **metadata: str) -> list[Server]:
    return [
        Server(f"vm{i}", f"vm{i}", host, "project-a", "ERROR", metadata=dict(metadata), vcpus=1)
        for i in range(1, n + 1)
    ]


async def recover(
    vim: MemoryVim,
    on_host: list[Server],
    *,
    settings: RecoverySettings | None = None,
    bmc: Bmc | None = None,
    segments: Segments | None = None,
    told: Told | None = None,
    fault_type: str = "compute.host.down",
    fault: Fault | None = None,
) -> Fault:
    """Run recovery of compute1's servers with a BMC (or none); the fault it filled in."""
    settings = settings or RecoverySettings()
    devices = {"compute1": bmc} if bmc is not None else {}
    fencing = Fencing(settings.fencing, devices) if devices else None
    guard = FenceGuard(settings.fencing, fencing, told)
    fault = fault or Fault("f1", fault_type, "compute1", 0.0)
    http = HttpClient()
    try:
        recovery = Recovery(
            vim,
            http,
            settings,
            guard,
            segments=segments,
            running=lambda h: [s for s in vim.servers.values() if s.host == h],
        )
        await recovery(fault, [replace(s) for s in on_host])
    finally:
        await http.close()
    return fault


def quick(**fencing: Any) -> RecoverySettings:
    return RecoverySettings(fencing=FencingSettings(**fencing))
