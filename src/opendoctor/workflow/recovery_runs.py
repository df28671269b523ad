"""Recovery by a workflow: a failed host's or server's recovery run by a workflow the
operator chose (`recovery.host_workflow`, `recovery.vm.workflow`) instead of the built-in
steps, with its outcome written into the fault's recovery records as theirs are.

The shipped `opendoctor.host_recovery` and `opendoctor.vm_recovery` do what the built-in
recovery does, step by step; an operator copies one, changes it, and names the copy
here. A host's workflow is given `host`, `servers` (the ids to move) and `fault`, and
says in its output's `moved` (a list of `{id, host}`) which servers it moved where; a
server's is given `server_id` and `fault`, and its SUCCESS is the server's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.core.model import Server
from opendoctor.core.workflows import Execution
from opendoctor.workflow.engine import Busy
from opendoctor.workflow.service import Workflows

log = logging.getLogger(__name__)


class RecoveryByWorkflow:
    def __init__(
        self, workflows: Workflows, host_workflow: str | None, vm_workflow: str | None
    ) -> None:
        self.workflows = workflows
        self.host_workflow = host_workflow
        self.vm_workflow = vm_workflow

    async def host(self, fault: Fault, servers: list[Server], settled: Awaitable[None]) -> None:
        """The inspector's `Recover`: one execution per failed host."""
        name = self.host_workflow or ""
        now = time.time()
        items = {
            s.id: RecoveryItem(
                server_id=s.id,
                name=s.name,
                from_host=s.host,
                requested=now,
                method=f"workflow {name}",
                action="evacuate",
            )
            for s in servers
        }
        fault.recovery.extend(items.values())
        # A server's late error mark would undo its move: the built-in recovery waits for
        # them too. The workflow fences first thing, so nothing runs twice meanwhile.
        await settled
        by_host: dict[str, list[Server]] = {}
        for server in servers:
            by_host.setdefault(server.host, []).append(server)

        async def one(host: str, on_it: list[Server]) -> None:
            given = {"host": host, "servers": [s.id for s in on_it], "fault": fault.brief()}
            ended, problem = await self._run(name, given, f"recovery of host {host}")
            moved: dict[str, Any] = {}
            if ended is not None and ended.state == "SUCCESS":
                listed = ended.output.get("moved") or []
                moved = {
                    m["id"]: m.get("host") for m in listed if isinstance(m, dict) and "id" in m
                }
            for server in on_it:
                item = items[server.id]
                item.started = ended.created_at if ended is not None else now
                item.finished = ended.updated_at if ended is not None else time.time()
                if server.id in moved:
                    item.result, item.to_host, item.attempts = "ok", moved[server.id], 1
                else:
                    item.result = "failed"
                    item.error = problem or f"not moved by workflow {name}"

        await asyncio.gather(*(one(h, on_it) for h, on_it in by_host.items()))

    async def server(self, fault: Fault, server: Server) -> None:
        """The inspector's `RecoverServer`: one execution for the failed server."""
        name = self.vm_workflow or ""
        item = RecoveryItem(
            server_id=server.id,
            name=server.name,
            from_host=server.host,
            requested=time.time(),
            method=f"workflow {name}",
        )
        fault.recovery.append(item)
        given = {"server_id": server.id, "fault": fault.brief()}
        ended, problem = await self._run(name, given, f"recovery of server {server.id}")
        item.started = ended.created_at if ended is not None else item.requested or 0.0
        item.finished = ended.updated_at if ended is not None else time.time()
        if ended is not None and ended.state == "SUCCESS":
            item.result, item.attempts = "ok", 1
        else:
            item.result, item.error = "failed", problem

    async def _run(
        self, name: str, given: dict[str, Any], what: str
    ) -> tuple[Execution | None, str | None]:
        """Start the workflow and wait for its end; (the ended execution, why it failed)."""
        try:
            started = await self.workflows.start_for_service(name, given, what)
        except (LookupError, ValueError, Busy) as exc:  # ValueError: InputError, SpecError
            log.error("recovery workflow not started", extra={"workflow": name, "error": str(exc)})
            return None, f"workflow {name} not started: {exc}"
        ended = await self.workflows.engine.finished(started.id)
        if ended.state == "SUCCESS":
            return ended, None
        return ended, f"workflow {name} {ended.state}: {ended.state_info} (execution {ended.id})"
