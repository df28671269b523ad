"""Inline mode: hosts serve their VMs themselves, so a lab can hold hundreds of them."""

from __future__ import annotations

import asyncio

from opendoctor.infra.httpclient import HttpClient

from .conftest import LabFactory
from .helpers import served_by

IP_PREFIX = "127.215"


async def test_three_hundred_inline_vms(lab_factory: LabFactory, http: HttpClient) -> None:
    lab = await lab_factory(hosts=4, vms=300, vm_mode="inline")
    servers = await lab.client.servers()
    assert len(servers) == 300
    # Past 254 VMs the addresses continue in the next /24.
    assert servers[253].endpoint == f"http://{IP_PREFIX}.2.254:8080/"
    assert servers[254].endpoint == f"http://{IP_PREFIX}.3.1:8080/"

    answers = await asyncio.gather(*(served_by(http, s.endpoint or "") for s in servers))
    assert answers == [f"Served by {s.name}\n" for s in servers]

    await lab.client.fail_host("compute4")
    gone = [s for s in servers if s.host == "compute4"]
    kept = [s for s in servers if s.host != "compute4"][:10]
    assert len(gone) == 75
    assert not any(await asyncio.gather(*(served_by(http, s.endpoint or "") for s in gone)))
    assert all(await asyncio.gather(*(served_by(http, s.endpoint or "") for s in kept)))

    await lab.client.force_down("compute4", True)
    moved = await asyncio.gather(*(lab.client.evacuate(s.id) for s in gone))
    # Parallel evacuations spread over the three healthy hosts.
    counts = {h: sum(1 for s in moved if s.host == h) for h in ("compute1", "compute2", "compute3")}
    assert all(c >= 20 for c in counts.values()), counts
    answers = await asyncio.gather(*(served_by(http, s.endpoint or "") for s in gone))
    assert answers == [f"Served by {s.name}\n" for s in gone]
