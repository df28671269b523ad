"""The monitors operators run, as real processes with their own configuration files:
Prometheus Alertmanager and collectd (Debian's `prometheus-alertmanager`,
`collectd-core`), sending to a running opendoctor. The tests of `monitors/` and
`opendoctor bench monitors` start them alike.

Their credentials go in files (mode 600) that their configuration names, never on a
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from opendoctor.infra.httpclient import HttpClient, HttpError
from opendoctor.infra.procs import ChildFailed, ChildProcess

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
COLLECTD_PLUGINS = Path("/usr/lib/collectd")
COLLECTD_TYPES = Path("/usr/share/collectd/types.db")


class ToolMissing(RuntimeError):
    """The tool is not installed here; the message says which package has it."""


class ToolFailed(ChildFailed):
    """A tool refused what it was given (it did start: `ChildFailed` if it did not)."""


def secret_file(path: Path, secret: str) -> Path:
    """A file only its owner reads, holding `secret`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return path


def tool(name: str, args: list[str], workdir: Path) -> ChildProcess:
    """One process of a tool, tied to this one (it writes no ready file: `start` is
    given a readiness check)."""
    return ChildProcess(name, args, None, workdir / f"{name}.log", tied=True)


def alertmanager_binary() -> str:
    for name in ALERTMANAGER_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing(
        "Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager)"
    )


class Alertmanager:
    """Alertmanager routing every alert to opendoctor's webhook, grouped by alert name
    and instance, at once (`group_wait` 0s) and its resolution within `group_interval`."""

    def __init__(self, workdir: Path, webhook: str, token: str, listen: str) -> None:
        self.workdir = workdir
        self.webhook = webhook
        self.token = token
        self.listen = listen  # host:port of its API
        self.url = f"http://{listen}"
        self.http = HttpClient(timeout=5.0)
        self.tool: ChildProcess | None = None

    def config(self, token_file: Path) -> dict[str, Any]:
        return {
            "route": {
                "receiver": "opendoctor",
                "group_by": ["alertname", "instance"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "opendoctor",
                    "webhook_configs": [
                        {
                            "url": self.webhook,
                            "send_resolved": True,
                            "max_alerts": 100,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(token_file),
                                }
                            },
                        }
                    ],
                }
            ],
        }

    async def start(self) -> None:
        binary = alertmanager_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        token_file = secret_file(self.workdir / "opendoctor.token", self.token)
        config = self.workdir / "alertmanager.yml"
        # YAML is a superset of JSON: the file is written as JSON.
        config.write_bytes(orjson.dumps(self.config(token_file), option=orjson.OPT_INDENT_2))
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.listen}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]
        self.tool = tool("alertmanager", args, self.workdir)
        await self.tool.start(30.0, self._ready)

    async def _ready(self) -> bool:
        try:
            return (await self.http.get(self.url + "/-/ready", timeout=1.0)).ok
        except HttpError:
            return False

    async def post(self, alerts: list[dict[str, Any]]) -> float:
        """Post alerts as Prometheus does (`/api/v2/alerts`); when they were sent."""
        sent = time.time()
        resp = await self.http.post(self.url + "/api/v2/alerts", json=alerts)
        if not resp.ok:
            raise ToolFailed(f"Alertmanager refused the alerts: {resp.status} {resp.body!r}")
        return sent

    async def stop(self) -> None:
        if self.tool is not None:
            await self.tool.stop()
        await self.http.close()


def _group_name() -> str:
    try:
        return grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        return str(os.getgid())


def collectd_binary() -> str:
    binary = shutil.which("collectd") or "/usr/sbin/collectd"
    if not Path(binary).exists() or not (COLLECTD_PLUGINS / "write_http.so").exists():
        raise ToolMissing("collectd is not installed (Debian: apt-get install collectd-core)")
    return binary


class Collectd:
    """collectd with write_http posting JSON to opendoctor (notifications and values),
    the threshold plugin on `ping_droprate`, and its unix socket to be fed through."""

    def __init__(self, workdir: Path, url: str, token: str, hostname: str = "monitor1") -> None:
        self.workdir = workdir
        self.url = url
        self.token = token
        self.hostname = hostname
        self.socket = workdir / "collectd.sock"
        self.tool: ChildProcess | None = None

    def write_http(self) -> str:
        """write_http's block: in a file of its own, mode 600, as it holds the token."""
        return f"""<Plugin write_http>
  <Node "opendoctor">
    URL "{self.url}"
    Format "JSON"
    Header "X-Auth-Token: {self.token}"
    Metrics true
    Notifications true
    StoreRates true
    Timeout 2000
  </Node>
</Plugin>
"""

    def config(self, write_http: Path) -> str:
        return f"""Hostname "{self.hostname}"
FQDNLookup false
Interval 1
BaseDir "{self.workdir}"
PIDFile "{self.workdir / "collectd.pid"}"
PluginDir "{COLLECTD_PLUGINS}"
TypesDB "{COLLECTD_TYPES}"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{self.workdir / "collectd-plugins.log"}"
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "{self.socket}"
  SocketGroup "{_group_name()}"
  SocketPerms "0600"
</Plugin>
LoadPlugin threshold
<Plugin threshold>
  <Plugin "ping">
    <Type "ping_droprate">
      FailureMax 0.5
      Interesting false
    </Type>
  </Plugin>
</Plugin>
<LoadPlugin write_http>
  FlushInterval 1
</LoadPlugin>
Include "{write_http}"
"""

    async def start(self) -> None:
        binary = collectd_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_http = secret_file(self.workdir / "write_http.conf", self.write_http())
        config = self.workdir / "collectd.conf"
        config.write_text(self.config(write_http))
        self.tool = tool("collectd", [binary, "-f", "-C", str(config)], self.workdir)
        await self.tool.start(30.0, self._ready)

    async def _ready(self) -> bool:
        return self.socket.exists()

    async def command(self, line: str) -> str:
        """One command on collectd's unix socket (PUTNOTIF, PUTVAL); its answer."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            answer = (await reader.readline()).decode().strip()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not answer.startswith("0 "):
            raise ToolFailed(f"collectd answered {answer!r} to {line.split()[0]}")
        return answer

    async def notify(self, severity: str, host: str, message: str, **parts: str) -> float:
        """A notification (`PUTNOTIF`), as a plugin of collectd's dispatches one; when."""
        sent = time.time()
        named = " ".join(f"{k}={v}" for k, v in parts.items())
        await self.command(
            f'PUTNOTIF severity={severity} time={sent:.3f} host={host} {named} message="{message}"'
        )
        return sent

    async def value(self, identifier: str, value: float) -> float:
        """A value (`PUTVAL host/plugin-instance/type-instance`), as a read plugin's."""
        sent = time.time()
        await self.command(f"PUTVAL {identifier} interval=1 {sent:.3f}:{value}")
        return sent

    async def stop(self) -> None:
        if self.tool is not None:
            await self.tool.stop()
