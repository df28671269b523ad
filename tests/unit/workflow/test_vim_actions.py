"""The VIM, fencing and nova.* actions against the in-memory VIM, and the memory VIM's
live migration itself."""

from __future__ import annotations

import pytest

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.model import Host, Server
from opendoctor.core.ports import FenceError, VimError
from opendoctor.workflow.actions import (
    Toolbox,
    builtin_actions,
)
from opendoctor.workflow.vim_actions import server_dict
from tests.unit.workflow.test_actions import call, failure


def cloud() -> MemoryVim:
    hosts = [Host(f"compute{i}", f"127.0.1.{i}", vcpus=4) for i in (1, 2, 3)]
    servers = [
        Server("vm-1", "one", "compute1", "project-a", vcpus=2),
        Server("vm-2", "two", "compute1", "project-b", vcpus=2),
        Server("vm-3", "three", "compute2", "project-a", "SHUTOFF", vcpus=2),
    ]
    return MemoryVim(hosts, servers)


# ----- the memory VIM's live migration ------------------------------------------------------


async def test_the_memory_vim_live_migrates_running_servers_only() -> None:
    vim = cloud()
    vim.hosts["compute3"].forced_down = True
    moved = await vim.live_migrate("vm-1")
    # compute3 is down; compute2 has room: its one server is off but still placed.
    assert (moved.host, moved.status) == ("compute2", "ACTIVE")
    assert vim.servers["vm-1"].host == "compute2"
    assert (await vim.live_migrate("vm-1", "compute1")).host == "compute1"
    with pytest.raises(VimError) as stopped:
        await vim.live_migrate("vm-3")
    assert stopped.value.status == 409 and "SHUTOFF" in str(stopped.value)
    vim.hosts["compute2"].enabled = False
    with pytest.raises(VimError) as nowhere:
        await vim.live_migrate("vm-2")
    assert nowhere.value.status == 409
    assert ("live_migrate", "vm-1", "compute1") in vim.calls


# ----- vim.* --------------------------------------------------------------------------------


async def test_host_actions() -> None:
    vim = cloud()
    actions = builtin_actions(Toolbox(vim=vim))
    assert await call(actions, "vim.force_down", host="compute1") == {
        "host": "compute1",
        "forced_down": True,
    }
    assert vim.hosts["compute1"].forced_down and vim.hosts["compute1"].state == "down"
    await call(actions, "vim.force_down", host="compute1", down=False)
    assert not vim.hosts["compute1"].forced_down
    assert "true or false" in str(await failure(actions, "vim.force_down", host="c", down="no"))

    await call(actions, "vim.disable_host", host="compute2")
    assert vim.hosts["compute2"].enabled is False
    assert await call(actions, "vim.enable_host", host="compute2") == {
        "host": "compute2",
        "enabled": True,
    }
    assert vim.hosts["compute2"].enabled is True

    hosts = await call(actions, "vim.list_hosts")
    assert hosts[0] == {"name": "compute1", "state": "up", "enabled": True, "forced_down": False}
    assert [h["name"] for h in hosts] == ["compute1", "compute2", "compute3"]


async def test_server_actions() -> None:
    vim = cloud()
    actions = builtin_actions(Toolbox(vim=vim))
    assert [s["id"] for s in await call(actions, "vim.list_servers", host="compute1")] == [
        "vm-1",
        "vm-2",
    ]
    assert len(await call(actions, "vim.list_servers")) == 3

    assert await call(actions, "vim.reset_state", server_id="vm-1") is None
    assert vim.servers["vm-1"].status == "ERROR"
    await call(actions, "vim.reset_state", server_id="vm-1", state="ACTIVE")
    assert vim.servers["vm-1"].status == "ACTIVE"
    bad = await failure(actions, "vim.reset_state", server_id="vm-1", state="deleted")
    assert "error, active" in str(bad)

    await call(actions, "vim.stop", server_id="vm-1")
    assert vim.servers["vm-1"].status == "SHUTOFF"
    await call(actions, "vim.start", server_id="vm-1")
    assert vim.servers["vm-1"].status == "ACTIVE"

    live = await call(actions, "vim.live_migrate", server_id="vm-1", target_host="compute3")
    assert live == {
        "id": "vm-1",
        "name": "one",
        "host": "compute3",
        "status": "ACTIVE",
        "project_id": "project-a",
    }
    cold = await call(actions, "vim.migrate", server_id="vm-3")
    assert cold["host"] != "compute2" and cold["status"] == "SHUTOFF"

    await call(actions, "vim.force_down", host="compute1")
    evacuated = await call(actions, "vim.evacuate", server_id="vm-2")
    assert evacuated["host"] in ("compute2", "compute3") and evacuated["status"] == "ACTIVE"
    assert server_dict(vim.servers["vm-2"]) == evacuated


async def test_vim_refusals_become_action_errors_with_the_status() -> None:
    vim = cloud()
    actions = builtin_actions(Toolbox(vim=vim))
    refused = await failure(actions, "vim.live_migrate", server_id="vm-3")
    assert str(refused).startswith("vim.live_migrate: cannot live-migrate")
    assert refused.result["status"] == 409
    unknown = await failure(actions, "vim.stop", server_id="vm-9")
    assert unknown.result == {"error": "no server vm-9", "status": 404}
    # The host is up: the VIM refuses to evacuate from it.
    assert (await failure(actions, "vim.evacuate", server_id="vm-1")).result["status"] == 409
    vim.fail = {"list_hosts"}
    assert "on purpose" in str(await failure(actions, "vim.list_hosts"))
    assert "missing input: server_id" in str(await failure(actions, "vim.migrate"))
    assert "non-empty string" in str(await failure(actions, "vim.start", server_id=7))


# ----- nova.* -------------------------------------------------------------------------------


async def test_nova_names_reach_the_same_driver_calls() -> None:
    vim = cloud()
    actions = builtin_actions(Toolbox(vim=vim))
    assert (await call(actions, "nova.servers_get", server="vm-2"))["name"] == "two"
    missing = await failure(actions, "nova.servers_get", server="vm-9")
    assert missing.result["status"] == 404

    moved = await call(
        actions, "nova.servers_live_migrate", server="vm-1", host="compute2", block_migration=True
    )
    assert moved["host"] == "compute2"
    assert (await call(actions, "nova.servers_migrate", server="vm-1"))["host"] != "compute2"
    await call(actions, "nova.servers_stop", server="vm-2")
    await call(actions, "nova.servers_start", server="vm-2")
    await call(actions, "nova.servers_reset_state", server="vm-2")
    assert vim.servers["vm-2"].status == "ERROR"

    down = await call(actions, "nova.services_force_down", host="compute1")
    assert down == {"host": "compute1", "forced_down": True}
    other = await failure(
        actions, "nova.services_force_down", host="compute1", binary="nova-scheduler"
    )
    assert "only the nova-compute service" in str(other)
    await call(actions, "nova.services_disable", host="compute3")
    assert vim.hosts["compute3"].enabled is False
    await call(actions, "nova.services_enable", host="compute3", binary="nova-compute")
    assert vim.hosts["compute3"].enabled is True

    evacuated = await call(actions, "nova.servers_evacuate", server="vm-2", host="compute3")
    assert evacuated["host"] == "compute3"
    calls = [c[0] for c in vim.calls]
    assert calls.count("live_migrate") == 1 and calls.count("evacuate") == 1


# ----- fence.power_off ----------------------------------------------------------------------


async def test_fencing_goes_through_the_toolbox() -> None:
    fenced: list[str] = []

    async def fence(host: str) -> None:
        if host == "compute9":
            raise FenceError("the BMC did not answer")
        fenced.append(host)

    actions = builtin_actions(Toolbox(vim=cloud(), fence=fence))
    assert await call(actions, "fence.power_off", host="compute1") == {
        "host": "compute1",
        "power": "off",
    }
    assert fenced == ["compute1"]
    failed = await failure(actions, "fence.power_off", host="compute9")
    assert "BMC did not answer" in str(failed)
    bare = builtin_actions(Toolbox(vim=cloud()))
    assert "no fencing" in str(await failure(bare, "fence.power_off", host="compute1"))
