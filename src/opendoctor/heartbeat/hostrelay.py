"""Host side of server-group messaging and per-service health, beside the heartbeat.

The supervisor (`hostside`) hands this relay every `server-group` and `service` PDU its
guests send, and the relay turns them into the host link's up messages (see
docs/guest-heartbeat.md and the host link in docs/): a guest's `send` becomes a
`group-send` whose `from` is the VM the channel belongs to, whatever the guest wrote, so
that no guest speaks for another. Sends and status requests are limited per VM (a token
bucket); beyond it the guest is answered `error` `rate-limited`. Down messages from the
service go to the VMs they name (`to`), as the guest PDUs of the same meaning.

The relay also reports what the host knows of its VMs: their services' health as their
agents report it (the whole list on each change, and again after the link reconnects),
the results of service restarts, and instance states the host learns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opendoctor.wire import heartbeat as p

log = logging.getLogger("opendoctor.heartbeat")

Uplink = Callable[[dict[str, Any]], None]
# (instance_id, msg_group, body) -> whether the VM's agent was there to take it
SendDown = Callable[[str, str, dict[str, Any]], bool]
Count = Callable[[str, str, str], None]
# (instance_id, service, ok): a restart the VM's agent reported
Restarted = Callable[[str, str, bool], None]

RELAY_COUNTERS = (
    "group_sent", "status_requests", "rate_limited", "too_large", "delivered",
    "undeliverable", "unknown_instance", "bad_downlink", "restart_requests",
    "restart_results", "restart_timeouts", "service_changes", "no_uplink",
)  # fmt: skip
MAX_PENDING_RESTARTS = 16  # per VM
MAX_REASON = 512  # reasons going up: what the service keeps of them
RESTART_GRACE = 2.0  # seconds past the restart's own timeout before the host gives up


@dataclass(eq=False, slots=True)
class _Guest:
    instance_id: str
    bucket: p.RateLimit
    services: list[dict[str, Any]] | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    # request_id -> (service, the timer that gives up on the agent's answer)
    pending: dict[str, tuple[str, asyncio.TimerHandle]] = field(default_factory=dict)


class HostRelay:
    """Per-VM rate limits, service states and pending restarts of one host."""

    def __init__(
        self,
        counters: dict[str, int],
        send_down: SendDown,
        count: Count,
        *,
        rate: float = 50.0,
        burst: int = 100,
        uplink: Uplink | None = None,
        restarted: Restarted | None = None,
    ) -> None:
        self.counters = counters
        for name in RELAY_COUNTERS:
            counters.setdefault(name, 0)
        self.uplink = uplink
        self._send_down = send_down
        self._count = count
        self._rate, self._burst = rate, burst
        self._restarted = restarted
        self._guests: dict[str, _Guest] = {}

    def add(self, instance_id: str) -> None:
        self._guests[instance_id] = _Guest(instance_id, p.RateLimit(self._rate, self._burst))

    def remove(self, instance_id: str) -> None:
        guest = self._guests.pop(instance_id, None)
        if guest is not None:
            for _, timer in guest.pending.values():
                timer.cancel()

    def services(self, instance_id: str) -> list[dict[str, Any]]:
        """The VM's services as its agent last reported them: [{name, healthy, reason}]."""
        guest = self._guests.get(instance_id)
        return [] if guest is None or guest.services is None else list(guest.services)

    def restarts(self, instance_id: str) -> dict[str, int]:
        """Restarts of each service the VM's agent reported done."""
        guest = self._guests.get(instance_id)
        return {} if guest is None else dict(guest.restarts)

    def _up(self, message: dict[str, Any]) -> None:
        if self.uplink is None:
            self.counters["no_uplink"] += 1
            return
        try:
            self.uplink(message)
        except Exception:
            log.exception("host link: the uplink refused a message")

    # ----- from guests --------------------------------------------------------------------

    def from_guest(self, instance_id: str, group: str, body: dict[str, Any]) -> None:
        guest = self._guests.get(instance_id)
        if guest is None:
            return
        kind = body["type"]
        if group == p.GROUP_SERVICE:
            if kind == p.RESTART_RESPONSE:
                self._restart_response(guest, body)
            else:
                self._count("unexpected_pdu", instance_id, f"{kind} is sent by the host")
            return
        if kind not in (p.SEND, p.STATUS_REQUEST):
            self._count("unexpected_pdu", instance_id, f"{kind} is sent by the host")
            return
        ref = body.get("msg_id") if kind == p.SEND else body["request_id"]
        if not guest.bucket.take():
            self.counters["rate_limited"] += 1
            self._error(instance_id, ref, "rate-limited", f"more than {self._rate:g} per second")
            return
        if kind == p.STATUS_REQUEST:
            self.counters["status_requests"] += 1
            self._up(
                {
                    "type": "status-request",
                    "from": instance_id,
                    **_pick(body, "request_id", "group"),
                }
            )
            return
        self.counters["group_sent"] += 1
        self._up(
            {
                "type": "group-send",
                "from": instance_id,  # the channel's VM, never what the guest claims
                "group": body.get("group"),
                "payload": body["payload"],
                "msg_id": body.get("msg_id") or uuid.uuid4().hex,
            }
        )

    def too_large(self, instance_id: str, ref: str | None, detail: str) -> None:
        """A send whose payload is over the limit: the guest is told, nothing goes up."""
        self.counters["too_large"] += 1
        self._error(instance_id, ref, "too-large", detail)

    def _error(self, instance_id: str, ref: str | None, code: str, detail: str) -> None:
        body = {"type": p.ERROR, "ref": ref, "code": code, "detail": detail}
        self._send_down(instance_id, p.GROUP_SERVER_GROUP, body)

    def services_reported(self, instance_id: str, services: list[dict[str, Any]]) -> None:
        """A challenge-response's `services`: the service hears of every change."""
        guest = self._guests.get(instance_id)
        now = [
            {"name": s["name"], "healthy": s["healthy"], "reason": _short(s.get("reason"))}
            for s in services
        ]
        if guest is None or now == guest.services:
            return
        guest.services = now
        self.counters["service_changes"] += 1
        self._up({"type": "service-state", "instance_id": instance_id, "services": now})

    def resend(self) -> None:
        """Every VM's service list once more (the host link has just (re)connected)."""
        for guest in self._guests.values():
            if guest.services is not None:
                self._up(
                    {
                        "type": "service-state",
                        "instance_id": guest.instance_id,
                        "services": guest.services,
                    }
                )

    def instance_state(self, instance_id: str, state: str, reason: str | None = None) -> None:
        """What the host knows of a VM: started, stopped, failed."""
        message = {"type": "instance-state", "instance_id": instance_id, "state": state}
        self._up({**message, "reason": _short(reason)})

    # ----- restarts -----------------------------------------------------------------------

    def _restart(self, instance_id: str, message: dict[str, Any]) -> None:
        request_id, service = message["request_id"], message["service"]
        timeout = float(message["timeout"])
        guest = self._guests.get(instance_id)
        body = {
            "type": p.RESTART_REQUEST,
            "request_id": request_id,
            "service": service,
            "timeout_ms": min(round(timeout * 1000), p.MAX_MS),
        }
        p.validate_pdu(body, p.GROUP_SERVICE)
        self.counters["restart_requests"] += 1
        if guest is None or len(guest.pending) >= MAX_PENDING_RESTARTS:
            why = "no such instance here" if guest is None else "too many restarts pending"
            self._restart_result(request_id, False, why)
            return
        if not self._send_down(instance_id, p.GROUP_SERVICE, body):
            self._restart_result(request_id, False, "the guest agent is not connected")
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout + RESTART_GRACE, self._restart_timeout, guest, request_id)
        old = guest.pending.pop(request_id, None)
        if old is not None:
            old[1].cancel()
        guest.pending[request_id] = (service, timer)

    def _restart_timeout(self, guest: _Guest, request_id: str) -> None:
        if guest.pending.pop(request_id, None) is not None:
            self.counters["restart_timeouts"] += 1
            self._restart_result(request_id, False, "the guest agent did not answer in time")

    def _restart_response(self, guest: _Guest, body: dict[str, Any]) -> None:
        pending = guest.pending.pop(body["request_id"], None)
        if pending is None:
            self._count("unsolicited_response", guest.instance_id, "restart-response unasked")
            return
        service, timer = pending
        timer.cancel()
        if body["ok"]:
            guest.restarts[service] = guest.restarts.get(service, 0) + 1
        if self._restarted is not None:
            self._restarted(guest.instance_id, service, body["ok"])
        self._restart_result(body["request_id"], body["ok"], body.get("reason"))

    def _restart_result(self, request_id: str, ok: bool, reason: str | None) -> None:
        self.counters["restart_results"] += 1
        message = {"type": "restart-result", "request_id": request_id, "ok": ok}
        self._up({**message, "reason": _short(reason)})

    # ----- down ---------------------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> None:
        """A down message of the host link, to each of its `to` VMs on this host."""
        try:
            group, body = _down_pdu(message)
            targets = message.get("to")
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise p.ProtocolError("bad-pdu", "'to' must be a list of instance ids")
            if group == p.GROUP_SERVICE:
                for target in targets[:1]:
                    self._restart(target, message)
                return
            p.validate_pdu(body, group)
        except (p.ProtocolError, AttributeError, KeyError, TypeError, ValueError) as exc:
            self.counters["bad_downlink"] += 1
            log.warning("host link: ignoring a bad down message: %s", exc)
            return
        for target in targets:
            if target not in self._guests:
                self.counters["unknown_instance"] += 1
            elif self._send_down(target, group, body):
                self.counters["delivered"] += 1
            else:
                self.counters["undeliverable"] += 1


_DOWN = {
    "group-message": (p.MESSAGE, ("from", "group", "payload", "msg_id")),
    "peer-state": (p.PEER_STATE, ("group", "peer", "peer_name", "state", "host", "reason")),
    "status-response": (p.STATUS_RESPONSE, ("request_id", "peers")),
    "error": (p.ERROR, ("ref", "code", "detail")),
}


def _short(reason: str | None) -> str | None:
    return None if reason is None else reason[:MAX_REASON]


def _pick(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: body.get(k) for k in keys}


def _down_pdu(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = message.get("type")
    if kind == "restart-service":
        return p.GROUP_SERVICE, {}
    if kind not in _DOWN:
        raise p.ProtocolError("bad-pdu", f"unknown down message type {str(kind)[:64]!r}")
    pdu, keys = _DOWN[kind]
    body = {"type": pdu, **{k: message[k] for k in keys if k in message}}
    if kind == "peer-state" and body.get("peer_name") is None:
        body["peer_name"] = ""  # a peer the service knows no name of
    if kind == "status-response":
        # The guest hears what its protocol knows of each peer; other keys are dropped.
        body["peers"] = [
            {**_pick(peer, *p.PEER_SCHEMA), "name": peer.get("name") or ""}
            for peer in message.get("peers") or []
        ]
    return p.GROUP_SERVER_GROUP, body
