"""The lab's hosts run what their capacity holds, as a VIM's scheduler allows: a server
that does not fit, or a move onto a disabled host, is refused and changes nothing."""

from __future__ import annotations

import pytest

from opendoctor.lab.client import LabError
from tests.integration.lab.conftest import LabFactory

IP_PREFIX = "127.232"


async def test_a_host_takes_what_fits_and_no_more(lab_factory: LabFactory) -> None:
    lab = await lab_factory(hosts=2, vms=0, host_vcpus=3, host_ram_mb=2048, heartbeat=False)
    client = lab.client
    big = await client.create_server("big", "project-a", host="compute1", vcpus=2,
                                     metadata={"HA_Enabled": "True"})  # fmt: skip
    assert (big.vcpus, big.ram_mb, big.metadata) == (2, 512, {"HA_Enabled": "True"})
    with pytest.raises(LabError, match="compute1 has 1 of 2 vcpus free"):
        await client.create_server("too-big", "project-a", host="compute1", vcpus=2)
    with pytest.raises(LabError, match="compute1 has 1536 of 2000 MB free"):
        await client.create_server("too-fat", "project-a", host="compute1", ram_mb=2000)
    assert [s.name for s in await client.servers()] == ["big"]
    hosts = {h.name: h for h in await client.hosts()}
    assert (hosts["compute1"].vcpus, hosts["compute1"].ram_mb) == (3, 2048)

    # A disabled host takes nothing, even when asked for by name.
    await client.set_enabled("compute2", False)
    await client.fail_host("compute1")
    await client.force_down("compute1", True)
    with pytest.raises(LabError, match="compute2 is disabled"):
        await client.evacuate(big.id, "compute2")
    await client.set_enabled("compute2", True)
    moved = await client.evacuate(big.id, "compute2")
    assert moved.host == "compute2"
