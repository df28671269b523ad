"""The host side's settings of the guest heartbeat: timings, limits, rates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    """Timings in seconds. With the defaults a hung guest is reported 80-180 ms after it
    stops (its next challenge's deadline) and a dead one `reconnect_grace` after its
    connection closes."""

    interval: float = 0.1  # used when a guest proposes 0 ("host's choice")
    response_timeout: float = 0.08
    # A guest may ask to be challenged less often than the default, not more: each
    # challenge costs the host, and the host serves every guest on it.
    min_interval: float = 0.1
    max_interval: float = 60.0
    min_response_timeout: float = 0.01
    max_response_timeout: float = 30.0
    # A restarting agent closes its connection; this long it may re-register unseen.
    reconnect_grace: float = 0.15
    max_msgs_per_sec: float = 100.0  # per connection; a guest needs 1 per interval
    msg_burst: int = 50
    max_connections: int = 4  # per VM: the agent, plus one restarting beside a hung one
    clear_after: float = 1.0  # good answers this long before a fault is reported cleared
    # Server-group sends and status requests per VM (a token bucket; beyond: rate-limited).
    group_rate: float = 50.0
    group_burst: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= interval <= max_interval")
        if not 0 < self.min_response_timeout <= self.response_timeout <= self.max_response_timeout:
            raise ValueError("need 0 < min_response_timeout <= response_timeout <= max_...")
        if self.reconnect_grace < 0 or self.max_msgs_per_sec <= 0 or self.msg_burst < 1:
            raise ValueError("reconnect_grace, max_msgs_per_sec and msg_burst must be positive")
        if self.clear_after < 0:
            raise ValueError("clear_after must not be negative")
