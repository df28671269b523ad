"""A real Zabbix for the tests: Debian's `zabbix_server` (PostgreSQL) and the API of its
frontend (`api_jsonrpc.php`, served by PHP's built-in server), on a database of its own.

Loading Zabbix's schema takes ten seconds or so: it is loaded once into a template
database (`opendoctor_zabbix_<version>`, kept on the server for the next runs), and each
bed copies it (a fraction of a second). Debian's frontend reads its configuration from
/etc/zabbix: the bed serves a copy of the frontend that reads the bed's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from opendoctor.infra.procs import die_with_parent, free_port, terminate
from tests import pg
from tests.servers import need

SERVER = Path("/usr/sbin/zabbix_server")
FRONTEND = Path("/usr/share/zabbix")
SCHEMA = Path("/usr/share/zabbix-server-pgsql")
CONFIG_CLASS = "include/classes/core/CConfigFile.php"
DEBIAN_CONFIG = "/etc/zabbix/zabbix.conf.php"
ADMIN = ("Admin", "zabbix")  # the account a new Zabbix database has


def missing() -> str | None:
    for path, package in (
        (SERVER, "zabbix-server-pgsql"),
        (SCHEMA / "schema.sql.gz", "zabbix-server-pgsql"),
        (FRONTEND / "api_jsonrpc.php", "zabbix-frontend-php"),
    ):
        if not path.exists():
            return f"{path} is missing (Debian: apt-get install {package})"
    if shutil.which("php") is None:
        return "php is missing (Debian: apt-get install php-cli php-pgsql)"
    return None


def _version() -> str:
    out = subprocess.run([str(SERVER), "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.split("\n", 1)[0]  # zabbix_server (Zabbix) 6.0.14
    return first.rsplit(" ", 1)[-1].replace(".", "_") or "unknown"


def _url(database: str) -> str:
    return make_url(pg.ADMIN_URL).set(database=database).render_as_string(hide_password=False)


async def _template() -> str:
    """The template database with Zabbix's schema and data, made if missing."""
    name = f"opendoctor_zabbix_{await asyncio.to_thread(_version)}"
    admin = await asyncpg.connect(pg.ADMIN_URL, timeout=5)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return name
        loading = f"{name}_{uuid.uuid4().hex[:8]}"
        await admin.execute(f'CREATE DATABASE "{loading}"')
        conn = await asyncpg.connect(_url(loading))
        try:
            for part in ("schema", "images", "data"):
                sql = await asyncio.to_thread(_read, SCHEMA / f"{part}.sql.gz")
                await conn.execute(sql)  # one round trip for the whole script
        finally:
            await conn.close()
        try:
            await admin.execute(f'ALTER DATABASE "{loading}" RENAME TO "{name}"')
        except asyncpg.DuplicateDatabaseError:  # another run made it meanwhile
            await admin.execute(f'DROP DATABASE "{loading}"')
        return name
    finally:
        await admin.close()


def _read(path: Path) -> str:
    with gzip.open(path, "rt") as fh:
        return fh.read()


def _frontend(workdir: Path, config: Path) -> Path:
    """A copy of the frontend that reads `config`, not Debian's file under /etc."""
    ui = workdir / "ui"
    shutil.copytree(FRONTEND, ui, symlinks=True)
    source = ui / CONFIG_CLASS
    text = source.read_text()
    if DEBIAN_CONFIG not in text:
        raise RuntimeError(f"{source} does not name {DEBIAN_CONFIG}: another frontend layout")
    source.write_text(text.replace(DEBIAN_CONFIG, str(config)))
    return ui


def _frontend_config(database: str, server: str, port: int) -> str:
    url = make_url(pg.ADMIN_URL)
    return f"""<?php
$DB['TYPE'] = 'POSTGRESQL';
$DB['SERVER'] = '{url.host or "127.0.0.1"}';
$DB['PORT'] = '{url.port or 5432}';
$DB['DATABASE'] = '{database}';
$DB['USER'] = '{url.username or "postgres"}';
$DB['PASSWORD'] = '{url.password or ""}';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '{server}';
$ZBX_SERVER_PORT = '{port}';
$ZBX_SERVER_NAME = 'opendoctor tests';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
"""


def _server_config(workdir: Path, database: str, listen: str, port: int) -> str:
    url = make_url(pg.ADMIN_URL)
    # Few processes, and the configuration cache refreshed every second (its floor):
    # hosts, items and actions made through the API count within a second.
    return f"""LogType=file
LogFile={workdir / "zabbix_server.log"}
PidFile={workdir / "zabbix_server.pid"}
SocketDir={workdir}
DBHost={url.host or "127.0.0.1"}
DBPort={url.port or 5432}
DBName={database}
DBUser={url.username or "postgres"}
DBPassword={url.password or ""}
ListenIP={listen}
ListenPort={port}
StartPollers=1
StartPollersUnreachable=1
StartTrappers=2
StartPingers=0
StartDiscoverers=0
StartHTTPPollers=0
StartTimers=1
StartEscalators=1
StartAlerters=1
StartPreprocessors=1
CacheUpdateFrequency=1
Timeout=4
AllowRoot=1
User=root
"""


@dataclass
class ZabbixBed:
    api_url: str
    trapper: tuple[str, int]
    workdir: Path


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def _port(host: str) -> int:
    """A free port Zabbix takes: its ListenPort must be in 1024-32767, below the range
    the kernel hands out for `free_port`."""
    for port in random.sample(range(10_100, 32_000), 200):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10100-32000 on {host}")


def _answers(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
        return True
    return False


async def _until(
    what: str, check: Callable[[], bool], procs: list[subprocess.Popen[bytes]], logs: list[Path]
) -> None:
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(check):
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(
                log.read_text(errors="replace")[-2000:] for log in logs if log.exists()
            )
            raise RuntimeError(f"{what} did not start:\n{tails}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def zabbix_bed(workdir: Path, listen: str = "127.0.0.1") -> AsyncIterator[ZabbixBed]:
    problem = missing()
    if problem is not None:
        need(problem)
    try:
        template = await _template()
    except (OSError, asyncpg.PostgresError) as exc:
        pg.missing(f"{type(exc).__name__}: {exc}")
        raise
    database = f"od_zabbix_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.ADMIN_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        trapper_port, web_port = _port(listen), free_port(listen)
        server_conf = workdir / "zabbix_server.conf"
        server_conf.write_text(_server_config(workdir, database, listen, trapper_port))
        config = workdir / "zabbix.conf.php"
        config.write_text(_frontend_config(database, listen, trapper_port))
        ui = await asyncio.to_thread(_frontend, workdir, config)
        server_log, web_log = workdir / "zabbix_server.out", workdir / "php.log"
        procs.append(_spawn([str(SERVER), "-f", "-c", str(server_conf)], server_log))
        procs.append(_spawn(["php", "-S", f"{listen}:{web_port}", "-t", str(ui)], web_log))
        logs = [server_log, workdir / "zabbix_server.log", web_log]
        trapper = (listen, trapper_port)
        await _until("zabbix_server", lambda: _answers(trapper), procs, logs)
        await _until("the frontend", lambda: _answers((listen, web_port)), procs, logs)
        yield ZabbixBed(f"http://{listen}:{web_port}/api_jsonrpc.php", trapper, workdir)
    finally:
        await asyncio.to_thread(terminate, [p.pid for p in procs], 10.0, True)
        await pg.drop_database(database)
