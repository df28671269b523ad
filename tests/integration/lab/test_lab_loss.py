"""Loss injection: a lab host drops a share of its heartbeat answers at random, per path;
and the host prober at a 10 ms beat takes none of that for a dead host."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from opendoctor.core.model import HOST_DOWN, Event
from opendoctor.core.settings import MonitorSettings
from opendoctor.lab.cli import app
from opendoctor.monitor.hostprobe import HostProber
from opendoctor.wire.probe import decode_answer, encode_probe

from .conftest import LabFactory
from .helpers import eventually, heartbeat, refused

IP_PREFIX = "127.233"
PRIMARY, ALT = f"{IP_PREFIX}.1.1", f"{IP_PREFIX}.251.1"


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.seqs: set[int] = set()

    def datagram_received(self, data: bytes, addr: object) -> None:
        answer = decode_answer(data)
        if answer is not None:
            self.seqs.add(answer[0])


async def answered(address: str, probes: int) -> int:
    """How many of `probes` probes to `address` got an answer."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Answers, remote_addr=(address, 4100))
    try:
        for seq in range(1, probes + 1):
            transport.sendto(encode_probe(seq))
            if seq % 50 == 0:
                await asyncio.sleep(0.005)  # never more in flight than a socket holds
        # Until the answers stop coming (a loaded machine answers late, never never).
        count = -1
        while count != len(proto.seqs):
            count = len(proto.seqs)
            await asyncio.sleep(0.3)
        return count
    finally:
        transport.close()


async def test_a_host_drops_the_chosen_share_of_answers_per_path(
    lab_factory: LabFactory,
) -> None:
    lab = await lab_factory(hosts=2, vms=0)
    client = lab.client
    details = await client.set_loss("compute1", 0.5, "primary")
    assert details["heartbeat_loss"] == {"primary": 0.5, "alt": 0.0}
    got = await answered(PRIMARY, 400)
    assert 120 <= got <= 280  # 200 expected; far outside this is not chance
    assert await answered(ALT, 100) == 100

    details = await client.set_loss("compute1", 0.25)  # both paths
    assert details["heartbeat_loss"] == {"primary": 0.25, "alt": 0.25}
    assert 240 <= await answered(ALT, 400) <= 360  # 300 expected
    await client.set_loss("compute1", 0.0, "both")
    assert await answered(PRIMARY, 100) == await answered(ALT, 100) == 100
    assert (await client.host_details())[1]["heartbeat_loss"] == {"primary": 0.0, "alt": 0.0}

    for fraction, path in ((1.0, "both"), (-0.1, "both"), (0.1, "sideways")):
        await refused(client.set_loss("compute1", fraction, path), 400)
    await refused(client.set_loss("compute9", 0.1), 404)
    # A host powered on again starts without loss.
    await client.set_loss("compute2", 0.9)
    await client.fail_host("compute2")
    await refused(client.set_loss("compute2", 0.1), 409)
    assert (await client.host_details())[1]["heartbeat_loss"] is None
    await client.restore_host("compute2")
    assert (await client.host_details())[1]["heartbeat_loss"] == {"primary": 0.0, "alt": 0.0}


async def test_fast_probes_take_loss_for_no_death_and_find_a_real_one(
    lab_factory: LabFactory,
) -> None:
    """10 ms probes, 5 % of the answers lost on each path of every host: no host is
    reported down in five seconds (1,000 rounds a host); then one powered off is."""
    lab = await lab_factory(hosts=3, vms=0)
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    prober = HostProber(MonitorSettings(interval=0.01, misses=3), emit)
    for host in await lab.client.hosts():
        prober.watch(host)
        await lab.client.set_loss(host.name, 0.05)
    await prober.start()
    try:
        start = prober.rounds
        await eventually(lambda: prober.rounds >= start + 500, timeout=60, what="500 rounds")
        assert [e for e in events if e.type == HOST_DOWN] == []

        t00 = (await lab.client.fail_host("compute2"))["t00"]
        (down,) = await eventually(
            lambda: [e for e in events if e.type == HOST_DOWN], timeout=10, what="compute2 down"
        )
        assert down.hostname == "compute2" and down.status == "down"
        # 3 probes 10 ms apart, a deadline of 5 ms or more: at best ~25 ms. Generous
        # above, the machine is shared.
        assert 0.02 <= down.trace["T01"] - t00 < 1.0
    finally:
        await prober.stop()
    assert [e.hostname for e in events if e.type == HOST_DOWN] == ["compute2"]


async def test_cli_set_loss(lab_factory: LabFactory) -> None:
    lab = await lab_factory(hosts=1, vms=0)
    cli = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        argv = [*args, "--state-dir", str(lab.state_dir)]
        result = cli.invoke(app, argv, env={"COLUMNS": "200"})
        assert result.exit_code == code, result.output
        return result.output

    output = await asyncio.to_thread(run, "set-loss", "compute1", "0.05", "--path", "alt")
    assert "heartbeat answers of compute1 lost: alt 5 %" in output
    status = await asyncio.to_thread(run, "status")
    assert "compute1: heartbeat answers lost (alt 5 %)" in status
    output = await asyncio.to_thread(run, "set-loss", "compute1", "0.2")
    assert "primary 20 %, alt 20 %" in output
    output = await asyncio.to_thread(run, "set-loss", "compute1", "0")
    assert "lost: none" in output
    assert "heartbeat answers lost" not in await asyncio.to_thread(run, "status")
    assert await heartbeat(PRIMARY, 4100) == "compute1"
    for bad in ("1", "1.5", "nan"):
        output = await asyncio.to_thread(run, "set-loss", "compute1", bad, code=1)
        assert "at least 0 and below 1" in output
    await asyncio.to_thread(run, "set-loss", "compute1", "0.1", "--path", "x", code=2)
