"""Host side of the guest heartbeat: challenges each VM's agent and reports VM faults.

The host end of each VM's channel is a listening Unix socket (the lab's stand-in for
a virtio-serial port). Everything runs as callbacks on one event loop: a protocol
object per connection, one timer per VM, no task or thread per VM, so supervising
thousands of VMs costs little more than their sockets.

Per VM, after its first `init`: every interval a challenge goes out; the response is
due `response_timeout` later. No response by then is a `missed` fault, a response
saying `healthy: false` an `unhealthy` fault. A fault clears once the guest has answered
well for `clear_after` seconds, so that a guest toggling its health (or its answers)
raises one fault, not a stream of reports.

The `server-group` and `service` message groups on the same channels go to the host's
`HostRelay` (`hostrelay`), which speaks to the service through the `uplink` the host
gives it (its host link) and takes the service's down messages (`deliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opendoctor.heartbeat.hostrelay import HostRelay, Restarted, Uplink
from opendoctor.heartbeat.hostsettings import HeartbeatSettings
from opendoctor.wire import heartbeat as p

log = logging.getLogger("opendoctor.heartbeat")

MONITOR = "opendoctor-guest-heartbeat"
MISSED = "compute.instance.heartbeat.missed"
UNHEALTHY = "compute.instance.heartbeat.unhealthy"
_GROUPS = p.GROUPS
MAX_REASON = 512  # a guest's words go into events and logs: keep them short

# challenges/responses: traffic; reinit: re-registrations; the rest: refused input.
# fmt: off
COUNTERS = (
    "challenges", "responses", "reinit", "late_response", "unsolicited_response", "malformed",
    "version", "bad_pdu", "unknown_group", "unexpected_pdu", "wrong_instance", "too_long",
    "flood", "too_many_connections", "internal_error",
)
# fmt: on

__all__ = ["COUNTERS", "MISSED", "MONITOR", "UNHEALTHY", "HeartbeatSettings", "HeartbeatSupervisor"]

Report = Callable[[dict[str, Any]], None]
Observe = Callable[[str, float], None]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(eq=False, slots=True)
class _Vm:
    instance_id: str
    name: str
    path: str
    server: asyncio.AbstractServer | None = None
    conns: set[_Conn] = field(default_factory=set)
    active: _Conn | None = None
    supervising: bool = False
    interval: float = 0.1
    timeout: float = 0.08
    seq: int = 0
    outstanding: tuple[int, str] | None = None
    expired: tuple[int, str] | None = None  # last unanswered challenge: tells late from bogus
    sent_at: float = 0.0
    faults: set[str] = field(default_factory=set)
    # Fault -> when the guest's answers turned good (loop time); cleared after clear_after.
    good_since: dict[str, float] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    complaints: int = 0

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Conn(asyncio.Protocol):
    """One guest connection; parses lines synchronously in data_received, so a response
    already received is always handled before a deadline timer of the same loop turn."""

    def __init__(self, sup: HeartbeatSupervisor, vm: _Vm) -> None:
        self.sup, self.vm = sup, vm
        self.transport: asyncio.Transport | None = None
        self.lines = p.LineSplitter()
        self.bucket = p.RateLimit(sup.settings.max_msgs_per_sec, sup.settings.msg_burst)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.vm.conns) >= self.sup.settings.max_connections:
            self.sup.count("too_many_connections", self.vm, "connection refused")
            transport.abort()
            return
        self.vm.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.lines.feed(data)
        while self.transport is not None and not self.transport.is_closing():
            try:
                line = self.lines.next_line()
            except p.ProtocolError as exc:
                self.sup.count("too_long", self.vm, str(exc))
                self.close()
                return
            if line is None:
                return
            if not self.bucket.take():
                self.sup.count("flood", self.vm, "more messages than the rate limit allows")
                self.close()
                return
            if line.strip():  # blank lines are allowed: resync on serial lines
                self.sup.received(self.vm, self, line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.vm.conns.discard(self)
        if self.vm.active is self:
            self.vm.active = None
            self.sup.disconnected(self.vm)

    def send(self, group: str, body: dict[str, Any]) -> bool:
        # A guest that stops reading must not make the host buffer challenges without end.
        t = self.transport
        if t is None or t.is_closing() or t.get_write_buffer_size() > p.MAX_LINE:
            return False
        t.write(p.encode(group, body))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HeartbeatSupervisor:
    """Challenges every added VM and calls `report(event)` with Doctor-format events.

    `observe(instance_id, seconds)`, if given, gets the round-trip time of every
    response that arrives in time (used by the soak benchmark).
    """

    def __init__(
        self,
        hostname: str,
        report: Report,
        settings: HeartbeatSettings | None = None,
        *,
        observe: Observe | None = None,
        uplink: Uplink | None = None,
        restarted: Restarted | None = None,
    ) -> None:
        self.hostname = hostname
        self.settings = settings or HeartbeatSettings()
        # All names present from the start, so that a metrics scrape sees zeros, not gaps.
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._report = report
        self._observe = observe
        self._vms: dict[str, _Vm] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        s = self.settings
        self.relay = HostRelay(
            self.counters, self._send_to, self._count_id, rate=s.group_rate,
            burst=s.group_burst, uplink=uplink, restarted=restarted,
        )  # fmt: skip

    # ---- public API -------------------------------------------------------------------

    async def add_vm(self, instance_id: str, name: str, socket_path: str) -> None:
        """Listen on `socket_path` for this VM's agent (replacing a stale socket file)."""
        self._loop = asyncio.get_running_loop()
        if instance_id in self._vms:
            await self.remove_vm(instance_id)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
                raise FileExistsError(f"{socket_path} exists and is not a socket")
            os.unlink(socket_path)
        vm = _Vm(instance_id, name, socket_path)
        vm.server = await self._loop.create_unix_server(lambda: _Conn(self, vm), socket_path)
        self._vms[instance_id] = vm
        self.relay.add(instance_id)

    async def remove_vm(self, instance_id: str) -> None:
        """Stop supervising a VM, silently: removal is not a fault."""
        vm = self._vms.pop(instance_id, None)
        if vm is None:
            return
        self.relay.remove(instance_id)
        vm.supervising = False
        vm.cancel_timer()
        if vm.active is not None:
            vm.active.send(p.GROUP_HEARTBEAT, {"type": p.EXIT, "reason": "supervision stopped"})
        vm.active = None
        for conn in list(vm.conns):
            if conn.transport is not None:
                conn.transport.close()  # close, not abort: let the exit reach the guest
        if vm.server is not None:
            vm.server.close()
            await vm.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(vm.path)

    def state(self, instance_id: str) -> str:
        """One of "waiting" (not registered, or exited), "missed", "unhealthy", "ok"."""
        vm = self._vms[instance_id]
        if not vm.supervising:
            return "waiting"
        if "missed" in vm.faults:
            return "missed"
        return "unhealthy" if "unhealthy" in vm.faults else "ok"

    def instances(self) -> list[str]:
        return list(self._vms)

    def deliver(self, message: dict[str, Any]) -> None:
        """A down message of the host link, to the VMs of its `to` (see `HostRelay`)."""
        self.relay.deliver(message)

    def _send_to(self, instance_id: str, group: str, body: dict[str, Any]) -> bool:
        vm = self._vms.get(instance_id)
        if vm is None or vm.active is None or not vm.supervising:
            return False
        return vm.active.send(group, body)

    def _count_id(self, name: str, instance_id: str, why: str) -> None:
        vm = self._vms.get(instance_id)
        if vm is not None:
            self.count(name, vm, why)

    async def close(self) -> None:
        for instance_id in list(self._vms):
            await self.remove_vm(instance_id)

    # ---- called by connections -----------------------------------------------------------

    def bump(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def count(self, name: str, vm: _Vm, why: str) -> None:
        self.bump(name)
        vm.complaints += 1
        # A hostile guest must not be able to flood the host's log either: after the
        # first few, one line per thousand (the counters keep the full tally).
        quiet = vm.complaints > 20 and vm.complaints % 1000
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "guest heartbeat %s from %s: %s", name, vm.instance_id, why)

    def received(self, vm: _Vm, conn: _Conn, line: bytes) -> None:
        try:
            group, body = p.decode(line, known_groups=_GROUPS)
            if group == p.GROUP_HEARTBEAT:
                self._handle(vm, conn, body)
            elif conn is vm.active and vm.supervising:
                self.relay.from_guest(vm.instance_id, group, body)
            else:
                self.count("unsolicited_response", vm, f"{group} message before init")
        except p.ProtocolError as exc:
            if exc.kind == "too-large" and conn is vm.active:
                self.relay.too_large(vm.instance_id, exc.ref, exc.detail)
                return
            self.count(exc.kind.replace("-", "_"), vm, str(exc))
        except Exception:  # a bug here must cost one message, never the supervisor
            self.bump("internal_error")
            log.exception("guest heartbeat: failed to handle a message from %s", vm.instance_id)

    def disconnected(self, vm: _Vm) -> None:
        if not vm.supervising or self._loop is None:
            return
        # A crashed agent's restart must not be a fault: give it a moment to come back.
        vm.cancel_timer()
        vm.outstanding = None
        vm.timer = self._loop.call_later(self.settings.reconnect_grace, self._gone, vm)

    # ---- protocol --------------------------------------------------------------------------

    def _handle(self, vm: _Vm, conn: _Conn, body: dict[str, Any]) -> None:
        kind = body["type"]
        if kind == p.INIT:
            self._init(vm, conn, body)
        elif kind == p.CHALLENGE_RESPONSE:
            self._response(vm, conn, body)
        elif kind == p.EXIT:
            if conn is vm.active and vm.supervising:
                log.info("guest %s exited: %s", vm.instance_id, body.get("reason"))
                vm.supervising = False
                vm.outstanding = vm.expired = None
                vm.cancel_timer()
        else:
            self.count("unexpected_pdu", vm, f"{kind} is sent by the host, not the guest")

    def _init(self, vm: _Vm, conn: _Conn, body: dict[str, Any]) -> None:
        if body["instance_id"] != vm.instance_id:
            self.count("wrong_instance", vm, f"init for {body['instance_id']!r} refused")
            return
        s = self.settings
        if vm.supervising:  # a restarted agent: normal, but worth counting
            self.bump("reinit")
            log.info("guest %s registered again", vm.instance_id)
        vm.interval = p.negotiate(
            body["heartbeat_interval_ms"], s.interval, s.min_interval, s.max_interval
        )
        # At most one challenge outstanding: a response is due before the next goes out.
        high = min(s.max_response_timeout, vm.interval)
        vm.timeout = p.negotiate(
            body["response_timeout_ms"], min(s.response_timeout, high), s.min_response_timeout, high
        )
        old, vm.active = vm.active, conn
        if old is not None and old is not conn:
            old.close()  # a new agent took over from a hung or half-dead one
        vm.supervising = True
        vm.outstanding = vm.expired = None
        conn.send(
            p.GROUP_HEARTBEAT,
            {
                "type": p.INIT_ACK,
                "instance_id": vm.instance_id,
                "heartbeat_interval_ms": round(vm.interval * 1000),
                "response_timeout_ms": round(vm.timeout * 1000),
            },
        )
        ms = (vm.interval * 1000, vm.timeout * 1000)
        log.info("guest %s registered (%s): %.0f/%.0f ms", vm.instance_id, body["agent"], *ms)
        vm.cancel_timer()
        self._challenge(vm)

    def _response(self, vm: _Vm, conn: _Conn, body: dict[str, Any]) -> None:
        got = (body["seq"], body["challenge"])
        if conn is not vm.active or not vm.supervising or got != vm.outstanding:
            if conn is vm.active and got == vm.expired:
                self.count("late_response", vm, f"response to challenge {got[0]} after deadline")
            else:
                self.count("unsolicited_response", vm, f"no such challenge outstanding: {got[0]}")
            return
        vm.outstanding = None
        self.bump("responses")
        if self._observe is not None and self._loop is not None:
            self._observe(vm.instance_id, self._loop.time() - vm.sent_at)
        now = self._loop.time() if self._loop is not None else 0.0
        self._recovered(vm, "missed", now, "guest answers challenges again")
        if "services" in body:
            self.relay.services_reported(vm.instance_id, body["services"])
        if body["healthy"]:
            self._recovered(vm, "unhealthy", now, "guest reports healthy")
        else:
            reason = (body.get("reason") or "guest reports unhealthy")[:MAX_REASON]
            self._fault(vm, "unhealthy", reason)

    def _challenge(self, vm: _Vm) -> None:
        assert self._loop is not None
        vm.timer = None
        if not vm.supervising:
            return
        vm.seq += 1
        vm.outstanding = (vm.seq, secrets.token_hex(8))
        vm.sent_at = self._loop.time()
        body = {"type": p.CHALLENGE_REQUEST, "seq": vm.seq, "challenge": vm.outstanding[1]}
        # Unsendable (no connection, guest not reading) still counts: it will be missed.
        if vm.active is not None:
            vm.active.send(p.GROUP_HEARTBEAT, body)
        self.bump("challenges")
        vm.timer = self._loop.call_at(vm.sent_at + vm.timeout, self._deadline, vm)

    def _deadline(self, vm: _Vm) -> None:
        assert self._loop is not None
        vm.timer = None
        if vm.outstanding is not None:
            vm.expired, vm.outstanding = vm.outstanding, None
            self._fault(
                vm, "missed", f"no response to challenge {vm.seq} within {vm.timeout * 1000:.0f} ms"
            )
        # Keep the cadence of the first challenge; a late loop skips, it does not bunch up.
        at = max(vm.sent_at + vm.interval, self._loop.time())
        vm.timer = self._loop.call_at(at, self._challenge, vm)

    def _gone(self, vm: _Vm) -> None:
        vm.timer = None
        if vm.supervising and vm.active is None:
            grace = self.settings.reconnect_grace * 1000
            self._fault(vm, "missed", f"channel closed, no re-registration within {grace:.0f} ms")

    # ---- reports -----------------------------------------------------------------------------

    def _recovered(self, vm: _Vm, fault: str, now: float, reason: str) -> None:
        """A good answer: the fault clears once the answers have been good long enough."""
        if fault not in vm.faults:
            return
        since = vm.good_since.setdefault(fault, now)
        if now - since >= self.settings.clear_after:
            self._clear(vm, fault, reason)

    def _fault(self, vm: _Vm, fault: str, reason: str) -> None:
        # A bad answer restarts the wait of a fault on its way to clearing.
        vm.good_since.pop(fault, None)
        if fault not in vm.faults:
            vm.faults.add(fault)
            self._emit(vm, fault, "down", reason)

    def _clear(self, vm: _Vm, fault: str, reason: str) -> None:
        vm.good_since.pop(fault, None)
        if fault in vm.faults:
            vm.faults.discard(fault)
            self._emit(vm, fault, "up", reason)

    def _emit(self, vm: _Vm, fault: str, status: str, reason: str) -> None:
        event = {
            "time": _now_iso(),
            "type": MISSED if fault == "missed" else UNHEALTHY,
            "details": {
                "hostname": self.hostname,
                "instance_id": vm.instance_id,
                "instance_name": vm.name,
                "status": status,
                "monitor": MONITOR,
                "monitor_event_id": uuid.uuid4().hex,
                "reason": reason,
            },
        }
        level = logging.WARNING if status == "down" else logging.INFO
        log.log(level, "guest %s: %s %s (%s)", vm.instance_id, event["type"], status, reason)
        if fault == "missed":
            # The service's peers hear of it too (it tells them "unreachable" or "failed").
            self.relay.instance_state(
                vm.instance_id, "failed" if status == "down" else "started", reason
            )
        try:
            self._report(event)
        except Exception:
            log.exception("guest heartbeat: report callback failed")
