"""Everything `up` does before and between starting the services: databases, the
RabbitMQ vhost, schema syncs, Keystone's bootstrap, the catalog, Nova's cells.

The services' own tools do the work (`keystone-manage`, `nova-manage`, ...), from the
bed's venv, each with its output in `log/setup.log`; passwords reach them through the
environment or their config files, never their command lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

from opendoctor.lab.openstack.spec import ADMIN, DATABASES, REGION, BedSpec, Secrets

# Run by the venv's Python (which has PyMySQL; ours need not): the administrator URL
# comes in the environment, one statement a line on stdin.
_SQL = """
import os, sys, urllib.parse, pymysql
u = urllib.parse.urlsplit(os.environ["BED_DB_URL"])
c = pymysql.connect(host=u.hostname, port=u.port or 3306, user=urllib.parse.unquote(
    u.username or "root"), password=urllib.parse.unquote(u.password or ""), autocommit=True)
for line in sys.stdin.read().splitlines():
    if line.strip():
        c.cursor().execute(line)
"""


class SetupError(RuntimeError):
    pass


async def run(
    spec: BedSpec, argv: list[str], env: dict[str, str] | None = None, stdin: str = ""
) -> None:
    """Run one of the bed's tools; its output goes to `log/setup.log`."""
    spec.logs.mkdir(parents=True, exist_ok=True)
    log = spec.logs / "setup.log"
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=os.environ | (env or {}),
        )
        await proc.communicate(stdin.encode())
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()[-15:]
        tail = "\n".join(lines)
        raise SetupError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed:\n{tail}")


async def sql(spec: BedSpec, statements: list[str]) -> None:
    await run(
        spec,
        [spec.bin("python"), "-c", _SQL],
        {"BED_DB_URL": spec.database},
        "\n".join(statements),
    )


async def create_databases(spec: BedSpec) -> None:
    names = [spec.prefix + n for n in DATABASES]
    await sql(spec, [f"DROP DATABASE IF EXISTS `{n}`" for n in names])
    await sql(spec, [f"CREATE DATABASE `{n}` CHARACTER SET utf8mb4" for n in names])


async def drop_databases(spec: BedSpec) -> None:
    await sql(spec, [f"DROP DATABASE IF EXISTS `{spec.prefix}{n}`" for n in DATABASES])


def _rabbit_user(spec: BedSpec) -> str:
    return spec.rabbit.split("@", 1)[0].split(":", 1)[0]


async def create_vhost(spec: BedSpec) -> None:
    await delete_vhost(spec)  # a fresh one: no queue left from an earlier bed
    await run(spec, ["rabbitmqctl", "-q", "add_vhost", spec.vhost])
    user = _rabbit_user(spec)
    await run(spec, ["rabbitmqctl", "-q", "set_permissions", "-p", spec.vhost, user] + 3 * [".*"])
    # Nova's notifier declares a durable queue per topic so that nothing is lost; with no
    # reader there, it would fill for as long as the bed runs. Keep the last minute.
    bounded = json.dumps({"message-ttl": 60_000, "max-length": 10_000})
    policy = ["notifications-bounded", r"^(versioned_)?notifications\.", bounded]
    await run(
        spec, ["rabbitmqctl", "-q", "set_policy", "-p", spec.vhost, "--apply-to", "queues", *policy]
    )


async def delete_vhost(spec: BedSpec) -> None:
    with contextlib.suppress(SetupError):  # there was none
        await run(spec, ["rabbitmqctl", "-q", "delete_vhost", spec.vhost])


def conf(spec: BedSpec, name: str) -> list[str]:
    return ["--config-file", str(spec.etc / name)]


async def sync_schemas(spec: BedSpec) -> None:
    """Every service's schema, at once: they are separate databases."""
    nova = [spec.bin("nova-manage"), *conf(spec, "nova/nova.conf")]
    await asyncio.gather(
        _keystone_db(spec),
        run(
            spec,
            [spec.bin("placement-manage"), *conf(spec, "placement/placement.conf"), "db", "sync"],
        ),
        run(spec, [spec.bin("glance-manage"), *conf(spec, "glance/glance-api.conf"), "db_sync"]),
        run(
            spec,
            [
                spec.bin("neutron-db-manage"),
                *conf(spec, "neutron/neutron.conf"),
                "upgrade",
                "heads",
            ],
        ),
        _nova_db(spec, nova),
    )


async def _keystone_db(spec: BedSpec) -> None:
    keystone = [spec.bin("keystone-manage"), *conf(spec, "keystone/keystone.conf")]
    owner = ["--keystone-user", "root", "--keystone-group", "root"]
    if os.geteuid() != 0:
        owner = ["--keystone-user", str(os.geteuid()), "--keystone-group", str(os.getegid())]
    await run(spec, [*keystone, "db_sync"])
    await run(spec, [*keystone, "fernet_setup", *owner])
    await run(spec, [*keystone, "credential_setup", *owner])


async def _nova_db(spec: BedSpec, nova: list[str]) -> None:
    await run(spec, [*nova, "api_db", "sync"])
    # cell0's database is the cell's name with `_cell0` (od_nova_cell0): nova-manage
    # derives it, so no URL (with a password, maybe) goes on a command line.
    await run(spec, [*nova, "cell_v2", "map_cell0"])
    await run(spec, [*nova, "cell_v2", "create_cell", "--name", "cell1", "--verbose"])
    await run(spec, [*nova, "db", "sync"])


async def bootstrap_keystone(spec: BedSpec, secrets: Secrets, keystone_url: str) -> None:
    """The admin user, project and role, the region and Keystone's own endpoints."""
    env = {
        "OS_BOOTSTRAP_USERNAME": ADMIN,
        "OS_BOOTSTRAP_PASSWORD": secrets.admin,
        "OS_BOOTSTRAP_PROJECT_NAME": ADMIN,
        "OS_BOOTSTRAP_ROLE_NAME": ADMIN,
        "OS_BOOTSTRAP_SERVICE_NAME": "keystone",
        "OS_BOOTSTRAP_ADMIN_URL": keystone_url,
        "OS_BOOTSTRAP_PUBLIC_URL": keystone_url,
        "OS_BOOTSTRAP_INTERNAL_URL": keystone_url,
        "OS_BOOTSTRAP_REGION_ID": REGION,
    }
    keystone = [spec.bin("keystone-manage"), *conf(spec, "keystone/keystone.conf")]
    await run(spec, [*keystone, "bootstrap"], env)


async def discover_hosts(spec: BedSpec) -> None:
    await run(
        spec,
        [spec.bin("nova-manage"), *conf(spec, "nova/nova.conf"), "cell_v2", "discover_hosts"],
    )
