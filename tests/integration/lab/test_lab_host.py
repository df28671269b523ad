"""A lab host on its own: control channel, VM processes that die with their host."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import pytest

from opendoctor.infra.httpclient import HttpClient
from opendoctor.lab.manager.hostctl import HostCallError, HostProc
from opendoctor.lab.procs.vm import serve_vm

from .conftest import assert_no_lab_processes
from .helpers import eventually, heartbeat, pid_running, served_by

IP_PREFIX = "127.214"
HOST_ADDR = f"{IP_PREFIX}.1.1"


@pytest.fixture
async def host() -> AsyncIterator[HostProc]:
    proc = HostProc("compute1", HOST_ADDR, 4100, 4101, "process")
    await proc.launch()
    try:
        yield proc
    finally:
        await proc.terminate()
        await assert_no_lab_processes(IP_PREFIX)


async def raw_control(line: bytes) -> dict[str, object]:
    reader, writer = await asyncio.open_connection(HOST_ADDR, 4101)
    writer.write(line)
    answer = await reader.readline()
    writer.close()
    result: dict[str, object] = json.loads(answer)
    return result


async def test_control_channel(host: HostProc, http: HttpClient) -> None:
    assert await heartbeat(HOST_ADDR, 4100) == "compute1"
    assert await raw_control(b"not json\n") == {
        "ok": False,
        "error": "bad JSON: Expecting value: line 1 column 1 (char 0)",
    }
    assert (await raw_control(b'{"op": "dance", "name": "x"}\n'))["ok"] is False
    assert (await raw_control(b'{"op": "start_vm", "name": "x"}\n'))["ok"] is False
    with pytest.raises(HostCallError, match="unknown op"):
        await host.request({"op": "dance", "name": "x"})

    await host.start_vm("vm1", f"{IP_PREFIX}.2.1", 8080)
    # start_vm answers only once the VM serves: no waiting needed here.
    assert await served_by(http, f"http://{IP_PREFIX}.2.1:8080/") == "Served by vm1\n"
    await host.start_vm("vm1", f"{IP_PREFIX}.2.1", 8080)  # repeated: fine
    with pytest.raises(HostCallError, match="already runs"):
        await host.start_vm("vm1", f"{IP_PREFIX}.2.2", 8080)

    listing = await host.request({"op": "list"})
    assert listing["host"] == "compute1"
    assert [vm["name"] for vm in listing["vms"]] == ["vm1"]

    await host.stop_vm("vm1")
    assert await served_by(http, f"http://{IP_PREFIX}.2.1:8080/") is None
    assert (await host.request({"op": "list"}))["vms"] == []


async def test_vm_dies_with_its_host(host: HostProc) -> None:
    await host.start_vm("vm1", f"{IP_PREFIX}.2.1", 8080)
    vm = (await host.request({"op": "list"}))["vms"][0]
    assert host.pid is not None and vm["pid"] != host.pid
    assert os.getpgid(vm["pid"]) == host.pid  # in the host's process group

    # Kill only the host process, not its group: the parent-death signal must do the rest.
    os.kill(host.pid, signal.SIGKILL)

    async def vm_gone() -> bool:
        return not pid_running(vm["pid"])

    await eventually(vm_gone, what="VM process gone after its host died")


async def test_inline_vm_server(http: HttpClient) -> None:
    vm = await serve_vm("inline1", f"{IP_PREFIX}.3.1", 8080)
    url = f"http://{IP_PREFIX}.3.1:8080/anything?x=1"
    try:
        for _ in range(3):  # keep-alive: the pooled connection is reused
            assert await served_by(http, url) == "Served by inline1\n"
        resp = await http.post(url, json={"a": 1})
        assert resp.status == 405
        resp = await http.request("HEAD", url)
        assert (resp.status, resp.body) == (200, b"")
    finally:
        await vm.close()
    assert await served_by(http, url) is None
