"""Faults saved at the same time (a storm's hundreds) are written together, each as it
was when it was saved, on either engine."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from opendoctor.core.faults import Fault, RecoveryItem
from opendoctor.store.db import Database
from opendoctor.store.pipeline import FaultStore
from tests.sql_trace import starting, statements


def host_fault(i: int) -> Fault:
    return Fault(
        id=f"fault-{i:04d}",
        type="compute.host.down",
        hostname=f"compute{i}",
        started=1000.0 + i,
        trace={"T00": 999.5 + i, "T02": 1000.0 + i},
        affected=[f"vm-{i}-{j}" for j in range(100)],
        signals=["compute.host.down"],
    )


async def test_faults_saved_together_are_one_upsert_and_read_back_whole(db: Database) -> None:
    store = FaultStore(db)
    try:
        faults = [host_fault(i) for i in range(300)]
        await store.save(faults[0])  # stored before: the group replaces it
        faults[0].trace["T09"] = 1001.25
        faults[0].recovery = [
            RecoveryItem("vm-0-0", "vm0", "compute0", "compute9", 1001.0, 1003.5, "ok")
        ]
        faults[1].status, faults[1].cleared = "cleared", 1010.0
        with statements(db) as seen:
            await asyncio.gather(*(store.save(f) for f in faults))
        upserts = starting(seen, "INSERT")
        # The first save is written alone at once; the others joined the next write.
        assert 1 <= len(upserts) <= 2, upserts
        for fault in faults:
            assert await store.get(fault.id) == replace(fault, repeats=0)
    finally:
        await store.close()


async def test_a_fault_saved_twice_in_one_group_keeps_its_later_picture(db: Database) -> None:
    store = FaultStore(db)
    try:
        others = [host_fault(i) for i in range(1, 20)]
        fault = host_fault(0)
        earlier = replace(fault, trace=dict(fault.trace))
        fault.trace["T03"] = 1000.75
        fault.flaps, fault.held_until = 2, 1020.0
        await asyncio.gather(
            *(store.save(f) for f in others), store.save(earlier), store.save(fault)
        )
        assert await store.get(fault.id) == fault
    finally:
        await store.close()
