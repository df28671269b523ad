"""Routing of server-group messages: what the hosts post, turned into what each host's
stream carries (docs/server-groups.md).

A group send goes out as one down message per host that runs other members of the
group, naming them in `to` (a group of a hundred peers on ten hosts costs ten queued
messages, not a hundred). The sender must be a member of the group, and run on the host
that speaks for it (per the topology): a guest cannot reach a group it is not in, nor
speak through another host. What is refused goes back to the sender as an `error`, and
is counted. Everything is best effort: a host not connected, or too slow, loses the
message (counted); nothing is retried or stored.

`deliver(host, message)` hands a down message on (to the host's stream in this
process, or towards the process that holds it); it never waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opendoctor.core.model import Server, ServiceHealth
from opendoctor.heartbeat.member_states import MemberStates
from opendoctor.heartbeat.membership import Membership, Peer

log = logging.getLogger(__name__)

Message = dict[str, Any]
Deliver = Callable[[str, Message], bool]

NOT_MEMBER = "not-member"
UNKNOWN_GROUP = "unknown-group"
RATE_LIMITED = "rate-limited"
UNKNOWN_INSTANCE = "unknown-instance"


class Router:
    def __init__(
        self,
        membership: Membership,
        deliver: Deliver,
        servers_on: Callable[[str], Iterable[Server]],
        allow_send: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.membership = membership
        self.deliver = deliver
        self.allow_send = allow_send
        self.states = MemberStates(membership.where, servers_on, self.tell_peers, membership.knows)
        self.counts: Counter[str] = Counter()
        self.services: dict[str, dict[str, ServiceHealth]] = {}
        # Restarts asked of agents, by request id: their answers come up as messages.
        self.restarts: dict[str, asyncio.Future[tuple[bool, str | None]]] = {}
        # What the service itself sends (a restart, a role): to the host here, or,
        # scaled out, to every process (`route_relay.Relay`), which deliver it there.
        self.send_down: Deliver = self._send
        self.announcer: Callable[[str, str, str | None], None] = self.states.announce
        self._handlers: dict[str, Callable[[str, Message], None]] = {
            "group-send": self._group_send,
            "status-request": self._status_request,
            "instance-state": self._instance_state,
            "service-state": self._service_state,
            "restart-result": self._restart_result,
        }

    def handle(self, host: str, messages: Sequence[Message]) -> None:
        """Route what `host` posted (each message valid in shape: the API checked)."""
        for message in messages:
            kind = message["type"]
            self.counts[f"up.{kind}"] += 1
            self._handlers[kind](host, message)

    # --- up messages ----------------------------------------------------------------------

    def _speaks_for(self, host: str, server_id: str, ref: str) -> bool:
        """Whether `host` runs the server it speaks for; if not, the error goes back."""
        server = self.membership.where(server_id)
        if server is not None and server.host == host:
            return True
        self.counts["refused.wrong_host"] += 1
        where = "no server the service knows" if server is None else "not a VM of this host"
        self._error(host, server_id, ref, UNKNOWN_INSTANCE, f"{server_id}: {where}")
        return False

    def _groups(self, host: str, sender: str, group: str | None, ref: str) -> list[str] | None:
        """The groups a message of `sender` is for; None (and the error sent) if refused."""
        if group is None:
            mine = list(self.membership.groups_of(sender))
            if not mine:
                self.counts["refused.not_member"] += 1
                self._error(host, sender, ref, NOT_MEMBER, "the server is in no server group")
                return None
            return mine
        if self.membership.group(group) is None:
            self.counts["refused.unknown_group"] += 1
            self._error(host, sender, ref, UNKNOWN_GROUP, f"no server group {group}")
            return None
        if not self.membership.is_member(sender, group):
            self.counts["refused.not_member"] += 1
            log.warning(
                "group message from a non-member refused",
                extra={"host": host, "server": sender, "group": group},
            )
            self._error(host, sender, ref, NOT_MEMBER, f"not a member of server group {group}")
            return None
        return [group]

    def _checked(self, host: str, message: Message, ref: str) -> list[str] | None:
        """The groups a send or request is for, once its sender checks out (else None,
        and the error is on its way back)."""
        sender = message["from"]
        if not self._speaks_for(host, sender, ref):
            return None
        return self._groups(host, sender, message["group"], ref)

    def _group_send(self, host: str, message: Message) -> None:
        sender, ref = message["from"], message["msg_id"]
        groups = self._checked(host, message, ref)
        if groups is None:
            return
        if not self.allow_send(sender):
            self.counts["refused.rate_limited"] += 1
            self._error(host, sender, ref, RATE_LIMITED, "over the server's send rate")
            return
        for group in groups:
            down = {
                "type": "group-message",
                "from": sender,
                "group": group,
                "payload": message["payload"],
                "msg_id": ref,
            }
            self._fan_out(self.membership.peers(sender, group), down)
        self.counts["routed.group-send"] += 1

    def _status_request(self, host: str, message: Message) -> None:
        sender, ref = message["from"], message["request_id"]
        groups = self._checked(host, message, ref)
        if groups is None:
            return
        peers = [
            {
                "id": peer.id,
                "name": peer.name,
                "group": group,
                "state": self.states.state_of(peer.id),
                "host": peer.host,
            }
            for group in groups
            for peer in self.membership.peers(sender, group)
        ]
        answer = {"type": "status-response", "to": [sender], "request_id": ref, "peers": peers}
        self._send(host, answer)

    def _runs(self, host: str, server_id: str, what: str) -> bool:
        """Whether `host` runs the server a report is about. One that moved away (its old
        host reports its process stopped), or that the service does not know, is not the
        host's to speak for: ignored, and counted."""
        server = self.membership.where(server_id)
        if server is not None and server.host == host:
            return True
        self.counts[f"ignored.{what}"] += 1
        return False

    def _instance_state(self, host: str, message: Message) -> None:
        server_id = message["instance_id"]
        if self._runs(host, server_id, "instance_state"):
            self.states.instance_state(server_id, message["state"], message["reason"])

    def _service_state(self, host: str, message: Message) -> None:
        server_id = message["instance_id"]
        if not self._runs(host, server_id, "service_state"):
            return
        before = self.services.get(server_id, {})
        now = time.time()
        services = {}
        for item in message["services"]:
            old = before.get(item["name"])
            same = old is not None and old.healthy == item["healthy"]
            since = old.since if same and old is not None else now
            services[item["name"]] = ServiceHealth(
                item["name"], item["healthy"], item["reason"], since
            )
        self.services[server_id] = services

    def _restart_result(self, host: str, message: Message) -> None:
        waiting = self.restarts.get(message["request_id"])
        if waiting is None or waiting.done():
            self.counts["ignored.restart_result"] += 1
            return
        waiting.set_result((message["ok"], message["reason"]))

    # --- down messages --------------------------------------------------------------------

    def tell_peers(
        self,
        server_id: str,
        state: str,
        reason: str | None,
        host: str | None = None,
        itself: bool = False,
    ) -> None:
        """A peer-state message about `server_id` to the other members of each of its
        groups (and, `itself`, to the server too)."""
        name = self.membership.peer(server_id).name or self.states.name_of(server_id)
        for group in self.membership.groups_of(server_id):
            down = {
                "type": "peer-state",
                "group": group,
                "peer": server_id,
                "peer_name": name,
                "state": state,
                "host": host,
                "reason": reason,
            }
            peers = self.membership.peers(server_id, group)
            if itself:
                peers = [*peers, self.membership.peer(server_id)]
            self._fan_out(peers, down)
        self.counts[f"peer_state.{state}"] += 1

    def send_to(self, server_id: str, message: Message) -> bool:
        """A message for one server, to the host it runs on; False if it has none known
        or the message could not be queued."""
        server = self.membership.where(server_id)
        if server is None:
            return False
        return self.send_down(server.host, {**message, "to": [server_id]})

    def announce(self, server_id: str, state: str, reason: str | None) -> None:
        """A state the service decided (a role), to the server's group peers."""
        self.announcer(server_id, state, reason)

    def _fan_out(self, peers: list[Peer], down: Message) -> None:
        for host, ids in self.membership.by_host(peers).items():
            self._send(host, {**down, "to": ids})

    def _send(self, host: str, message: Message) -> bool:
        sent = self.deliver(host, message)
        self.counts["down.sent" if sent else "down.lost"] += 1
        return sent

    def _error(self, host: str, to: str, ref: str, code: str, detail: str) -> None:
        error = {"type": "error", "to": [to], "ref": ref, "code": code, "detail": detail}
        self._send(host, error)
