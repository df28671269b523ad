"""The plug-in protocols, one per plug-in point, and the errors they may raise.

- `VimDriver`: between opendoctor and a VIM (implementations in `opendoctor.controller`).
- `Bus`: how blocks hand work to each other (in-process or RabbitMQ, `opendoctor.bus`).
- `NotifyTarget`: where the inspector sends what tells owners (the notifier beside it,
  or the bus to the notifier replicas).
- `Sender`: one way of delivering a notification (per URL scheme, `opendoctor.notifier`).
- `Presence`: claims that say a process is there (database leases, `opendoctor.store`).
- `FenceDevice`: a host's power switch, its BMC (Redfish, IPMI, `opendoctor.recovery`).
- `SegmentSource`: the failover segments recovery decides from (`opendoctor.store`).
- `HostMaintainer`: what is done to an emptied host during planned maintenance (its
  BMC's power cycle in `opendoctor.recovery`, a workflow, nothing).
- `GuestLink`: the service's way to the guest agents inside servers, through their hosts
  (`opendoctor.heartbeat`): their services' health, restarting a service, and telling a
  server's group peers what became of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from opendoctor.core.model import Host, Server, ServerGroup, ServiceHealth, VimChange
from opendoctor.core.notifications import Batch, OutboxEntry
from opendoctor.core.segments import SegmentView


class VimError(Exception):
    """A VIM refused or failed a request. `status` is the VIM's HTTP status when it has one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class VimDriver(Protocol):
    """What opendoctor needs from a VIM. Every call may raise `VimError`."""

    async def list_hosts(self) -> list[Host]: ...

    async def list_servers(self) -> list[Server]: ...

    async def force_down(self, host: str, down: bool) -> None:
        """Mark a compute host's service down (or back up), as `nova service-force-down`."""

    async def set_host_enabled(self, host: str, enabled: bool) -> None:
        """Enable or disable scheduling onto a host."""

    async def reset_state(self, server_id: str, state: str) -> None:
        """Set a server's status, as `nova reset-state` (`error` or `active`)."""

    async def reset_states(self, server_ids: Sequence[str], state: str) -> dict[str, str]:
        """`reset_state` for many servers (a failed host's); returns why the VIM refused
        each one it did not set, by id. One request where the VIM takes a batch; else one
        per server, at once. Raises `VimError` only if the VIM could not be asked."""

    async def stop(self, server_id: str) -> None:
        """Power a server off (from any state, error included); returns once it is
        stopped (SHUTOFF), so that a `start` may follow at once."""

    async def start(self, server_id: str) -> None:
        """Power a stopped server on; returns once it runs (ACTIVE)."""

    async def migrate(self, server_id: str, target_host: str | None = None) -> Server:
        """Move a server of a host that is up to another (cold: it is stopped on the way
        and comes back as it was, running or stopped); returns it once it is there."""

    async def live_migrate(self, server_id: str, target_host: str | None = None) -> Server:
        """Move a running server to another host without stopping it; returns it once it
        runs on the new host (raises `VimError` if the VIM could not: Nova leaves it
        running where it was)."""

    async def evacuate(self, server_id: str, target_host: str | None = None) -> Server:
        """Rebuild a server of a failed host on a healthy one; returns it once it runs
        there (raises `VimError` if the VIM could not)."""

    async def rebuild(self, server_id: str) -> Server:
        """Re-create a server from its image on the host it is on (as `nova rebuild`: same
        id, same addresses, a fresh disk); returns it once it runs again."""

    async def server_groups(self) -> list[ServerGroup]:
        """Every server group of every project, with its members' ids."""

    def changes(self) -> AsyncIterator[VimChange]:
        """Changes to hosts and servers from now on, for as long as the caller iterates."""

    async def close(self) -> None: ...


Handler = Callable[[Any], Awaitable[None]]
# A handler of several messages of one key at once, in order (a batch of `publish_many`).
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


class Bus(Protocol):
    """Messages on a topic are handled in order per `key`; different keys run concurrently."""

    def subscribe(self, topic: str, handler: Handler) -> None: ...

    def subscribe_many(self, topic: str, handler: BatchHandler) -> None:
        """As `subscribe`, for a handler that takes the messages a bus delivers together
        (those of one key, in order) at once, to ask its store one question for all of
        them; a bus that delivers one at a time hands it lists of one."""

    async def publish(self, topic: str, message: Any, key: str = "") -> None: ...

    async def publish_many(self, topic: str, items: Sequence[tuple[str, Any]]) -> None:
        """Publish (key, message) pairs, in order per key, as if one `publish` after
        the other, but at the cost of a few: a request of many events is not a broker
        round trip each."""

    async def drain(self) -> None:
        """Wait until every message published so far has been handled."""

    async def close(self) -> None: ...


class Presence(Protocol):
    """Named claims, each held by one holder until it expires unless renewed: how a
    process tells the others it is there (the bus: "I consume partition p") without
    their needing to reach it. Implemented on database leases (`store.leases`)."""

    async def claim(self, names: Collection[str], holder: str, ttl: float) -> set[str]:
        """Take or renew the claims for `ttl` seconds; returns those `holder` now holds
        (a claim another holds until it expires is not taken)."""

    async def release(self, names: Collection[str], holder: str) -> None:
        """Give claims up at once (a clean stop)."""

    async def holders(self, names: Collection[str]) -> dict[str, str]:
        """Who holds each claim now; a name not held (or expired) is left out."""


class NotifyTarget(Protocol):
    """Where the inspector sends the events that tell owners: the notifier in its process,
    or the bus to the notifier replicas (`notifier.remote.BusNotifications`)."""

    async def notify_many(self, batches: Sequence[Batch]) -> list[OutboxEntry]:
        """Send; returns the entries once their first attempts have ended, or a bounded
        wait for them has (`landed` waits for the rest)."""

    async def landed(self, entries: Sequence[OutboxEntry]) -> None:
        """Wait for the first attempts of `entries` that outlasted `notify_many`."""


class DeliveryError(Exception):
    """A notification was not delivered; `retry` says whether trying again may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Sender(Protocol):
    async def send(self, entry: OutboxEntry) -> None:
        """Deliver one entry or raise `DeliveryError`."""


class FenceError(Exception):
    """A fence device refused, failed or did not answer: the host may still be running."""


@runtime_checkable
class FenceDevice(Protocol):
    """A host's power, as its BMC controls it. Every call may raise `FenceError`."""

    async def power_state(self) -> str:
        """`on`, `off`, or `unknown` (the device answers but cannot say)."""

    async def power_off(self) -> None:
        """Cut the power at once (no graceful shutdown: a fence must not wait on the OS)."""

    async def power_on(self) -> None: ...

    async def close(self) -> None: ...


class SegmentSource(Protocol):
    """The failover segments (`core.segments`), as recovery reads and updates them."""

    async def segment_of(self, host: str) -> SegmentView | None:
        """The segment `host` belongs to, with all its hosts; None if in none."""

    async def set_reserved(self, segment_id: str, host: str, reserved: bool) -> None:
        """Mark a host of the segment reserved or not (a reserved host taken into use
        for a recovery is reserved no more)."""


class HostMaintainer(Protocol):
    """The work on one host while it is out of service (a session's host action)."""

    async def maintain(self, host: str, metadata: dict[str, Any]) -> None:
        """Do it; return once it is done (the host may have been off and on again: the
        caller waits for it to be back in the VIM). Raises on failure, with the reason."""


class GuestLinkError(Exception):
    """The guest agent could not be asked, or its answer was a refusal or a failure."""


class GuestLink(Protocol):
    """The service's way to the guest agents inside servers, through their hosts."""

    def services(self, server_id: str) -> Mapping[str, ServiceHealth]:
        """The server's services, as its agent's health commands last reported them
        (empty: the agent checks no named service, or nothing was heard yet)."""

    async def restart_service(self, server_id: str, service: str, timeout: float) -> None:
        """Have the server's agent restart one of its services; returns once the agent
        ran the service's restart command and it succeeded. Raises `GuestLinkError`."""

    async def announce(self, server_id: str, state: str, reason: str | None = None) -> None:
        """Tell the server's group peers a state the service decided (e.g. `active` or
        `standby` after a switch-over): a peer-state message, best effort."""
