"""Bring the bed up, take it down, say how it is (`opendoctor openstack-lab up|down|status`
and the tests' fixture).

`openstack.json` in the bed's directory lists the running processes (pids, URLs), the
way `lab.json` does for the lab; `clouds.yaml` beside it (mode 600) is how clients
log in: `OS_CLIENT_CONFIG_FILE=<dir>/clouds.yaml`, cloud `opendoctor-bed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.infra.procs import free_port, pid_alive, terminate
from opendoctor.lab.openstack import catalog, configs, install, procs, provision
from opendoctor.lab.openstack.spec import ADMIN, APIS, BedSpec, Secrets, write_private
from opendoctor.lab.openstack.state import STATE_FILE, read_state, save_state

CLOUD = "opendoctor-bed"
Progress = Callable[[str], None]


class BedError(RuntimeError):
    pass


def running(spec: BedSpec) -> dict[str, Any] | None:
    """The state of a bed whose control plane is alive, or None. A nova-compute may be
    down: its lab host is powered off, and the bed is as up as a cloud with a dead host."""
    state = read_state(spec)
    if state is None or not all(
        pid_alive(p["pid"]) for p in state["processes"] if not p.get("host")
    ):
        return None
    return state


def clouds_yaml(url: str, password: str) -> str:
    # JSON is YAML: no YAML writer needed for a file this small.
    cloud = {
        "auth": {
            "auth_url": url,
            "username": ADMIN,
            "password": password,
            "project_name": ADMIN,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
        "identity_api_version": 3,
    }
    return json.dumps({"clouds": {CLOUD: cloud}}, indent=2) + "\n"


async def _wait_http(http: HttpClient, url: str, pid: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise BedError(f"{log.stem} exited:\n{procs.tail(log)}")
        with contextlib.suppress(HttpError):
            if (await http.get(url, timeout=10)).status < 500:
                return
        await asyncio.sleep(0.3)
    raise BedError(f"{log.stem} does not answer at {url} after {timeout:.0f}s:\n{procs.tail(log)}")


async def up(
    spec: BedSpec, progress: Progress = lambda _: None, timeout: float = 300
) -> dict[str, Any]:
    """Install (once), provision and start the bed; its state (also in openstack.json)."""
    started = time.monotonic()
    if running(spec) is not None:
        raise BedError(f"a bed is already running from {spec.directory}")
    await asyncio.to_thread(_stop_leftovers, spec)
    progress("installing the OpenStack venv (once; about a minute)")
    fresh = await asyncio.to_thread(install.ensure_venv, spec, spec.logs / "install.log")
    installed = time.monotonic()
    ports = {name: free_port(spec.address) for name in APIS}
    urls = configs.urls(spec, ports)
    secrets = Secrets.new()
    secrets.save(spec.directory)
    configs.write_all(spec, ports, secrets, spec.venv / "etc")
    write_private(spec.directory / "clouds.yaml", clouds_yaml(urls["keystone"], secrets.admin))
    progress("databases, vhost and schemas")
    await asyncio.gather(provision.create_databases(spec), provision.create_vhost(spec))
    await provision.sync_schemas(spec)
    services = procs.plan(spec, ports)
    state: dict[str, Any] = {
        "home": str(spec.home),
        "urls": urls,
        "hosts": list(spec.hosts),
        # The lab whose hosts these computes stand for (`opendoctor lab up --ip-prefix`).
        "lab_prefix": spec.lab_prefix,
        "addresses": {host: spec.host_address(host) for host in spec.hosts},
        "processes": [],
    }
    http = HttpClient(timeout=30)
    try:
        progress("keystone")
        keystone = services[0]
        await _start(spec, http, keystone, state, timeout)
        await provision.bootstrap_keystone(spec, secrets, urls["keystone"])
        session = await catalog.Session.login(http, urls["keystone"], secrets.admin)
        await catalog.register(session, urls, secrets)
        progress("placement, glance, neutron, nova")
        await asyncio.gather(*(_start(spec, http, s, state, timeout) for s in services[1:]))
        progress("compute services")
        await _computes_up(session, urls["nova"], spec.hosts, timeout)
        await provision.discover_hosts(spec)
        await _placeable(session, urls["placement"], spec.hosts, timeout)
        await catalog.flavor_and_image(session, urls)
    except BaseException:
        save_state(spec, state)
        await asyncio.to_thread(_stop_leftovers, spec)
        raise
    finally:
        await http.close()
    state["took"] = {
        "install": round(installed - started, 1),
        "installed_now": fresh,
        "total": round(time.monotonic() - started, 1),
    }
    state["started"] = time.time()
    save_state(spec, state)
    return state


async def _start(
    spec: BedSpec, http: HttpClient, service: procs.Service, state: dict[str, Any], timeout: float
) -> None:
    pid = await asyncio.to_thread(procs.spawn, spec, service)
    entry = {"name": service.name, "pid": pid, "url": service.url, "host": service.host}
    state["processes"].append(entry)
    save_state(spec, state)  # a `down` after a failed `up` finds what did start
    if service.url:
        await _wait_http(http, service.url, pid, spec.logs / f"{service.name}.log", timeout)


async def _computes_up(
    session: catalog.Session, nova: str, hosts: tuple[str, ...], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = await catalog.compute_services(session, nova)
        seen = {s["host"]: s["state"] for s in found}
        if all(seen.get(h) == "up" for h in hosts):
            return
        await asyncio.sleep(0.5)
    raise BedError(f"compute services not all up after {timeout:.0f}s: {seen}")


async def _placeable(
    session: catalog.Session, placement: str, hosts: tuple[str, ...], timeout: float
) -> None:
    """Until Placement has every compute's resource provider with its inventory: a
    compute's service is up before it has reported what it holds, and a server created
    in that moment finds no host (NoValidHost: ERROR)."""
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while time.monotonic() < deadline:
        found = await session.call("GET", f"{placement}/resource_providers")
        for provider in found["resource_providers"]:
            name = provider["name"]
            if name in hosts and name not in ready:
                inventory = await session.call(
                    "GET", f"{placement}/resource_providers/{provider['uuid']}/inventories"
                )
                if "VCPU" in inventory.get("inventories", {}):
                    ready.add(name)
        if ready >= set(hosts):
            return
        await asyncio.sleep(0.5)
    raise BedError(
        f"Placement has no inventory for {sorted(set(hosts) - ready)} after {timeout:.0f}s"
    )


def _stop_leftovers(spec: BedSpec) -> list[str]:
    state = read_state(spec)
    if state is None:
        return []
    entries = state["processes"]
    # Computes first, the APIs (Keystone) last: nothing loses its API while it stops.
    terminate([p["pid"] for p in reversed(entries)], 15.0, group=True)
    (spec.directory / STATE_FILE).unlink(missing_ok=True)
    return [p["name"] for p in entries]


async def down(spec: BedSpec) -> list[str]:
    """Stop every process, drop the databases and the vhost, remove the configs and
    keys (the venv stays for the next `up`; so do the logs). The names stopped."""
    state = read_state(spec)
    if state is not None and "home" in state:
        spec = replace(spec, home=Path(state["home"]))  # the venv it was started from
    stopped = await asyncio.to_thread(_stop_leftovers, spec)
    if spec.venv.exists():
        await provision.drop_databases(spec)
        await provision.delete_vhost(spec)
    for name in ("etc", "fernet-keys", "credential-keys", "images", "nova", "lock"):
        shutil.rmtree(spec.directory / name, ignore_errors=True)
    for name in ("clouds.yaml", "secrets.json"):
        (spec.directory / name).unlink(missing_ok=True)
    return stopped


async def status(spec: BedSpec) -> dict[str, Any] | None:
    """Each process (alive, its API answering) and Nova's compute services."""
    state = read_state(spec)
    if state is None:
        return None
    http = HttpClient(timeout=5)
    try:
        for entry in state["processes"]:
            entry["alive"] = pid_alive(entry["pid"])
            if entry["url"]:
                try:
                    entry["http"] = (await http.get(entry["url"])).status
                except HttpError as exc:
                    entry["http"] = str(exc)
        try:
            session = await catalog.Session.login(
                http, state["urls"]["keystone"], Secrets.load(spec.directory).admin
            )
            state["compute_services"] = await catalog.compute_services(
                session, state["urls"]["nova"]
            )
        except (HttpError, catalog.CatalogError, OSError, KeyError) as exc:
            state["compute_services_error"] = str(exc)
    finally:
        await http.close()
    return state
