"""The Zabbix API, read on demand through `zabbix-utils`: the one module that uses it.

opendoctor asks for one host's open problems when it is told to (`POST
/v1/monitors/zabbix/hosts/{host}/sync`): after a webhook that could not be delivered,
or to take up what Zabbix knew before opendoctor started. The client is synchronous
(urllib): each question runs in a thread.
"""

from __future__ import annotations

import asyncio
import stat
from typing import Any

from opendoctor.core.monitor_settings import ZabbixApiSettings
from opendoctor.core.redact import redact


class ZabbixApiError(Exception):
    """The API could not be asked, or refused; the message names no secret."""


class UnknownZabbixHost(LookupError):
    pass


def _token(settings: ZabbixApiSettings) -> str | None:
    if settings.token is not None:
        return settings.token.get_secret_value()
    path = settings.token_file
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise ZabbixApiError(f"monitors.zabbix.api.token_file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ZabbixApiError(
            f"monitors.zabbix.api.token_file {path} is open to group or others "
            f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    return token or None


class ZabbixReader:
    def __init__(self, settings: ZabbixApiSettings) -> None:
        if not settings.url:
            raise ZabbixApiError("monitors.zabbix.api.url is not set: no Zabbix API to read")
        self.settings = settings
        self.url: str = settings.url

    async def problems(self, host: str) -> list[dict[str, Any]]:
        """The open problems of the Zabbix host named `host` (its technical name, as
        {HOST.HOST}), newest first, with their tags."""
        return await asyncio.to_thread(self._problems, host)

    def _problems(self, host: str) -> list[dict[str, Any]]:
        # Imported here: a service that never reads Zabbix does not load the client.
        from zabbix_utils import ZabbixAPI
        from zabbix_utils.exceptions import ModuleBaseException

        settings = self.settings
        token = _token(settings)
        password = settings.password.get_secret_value() if settings.password else None
        if token is None and not (settings.user and password):
            raise ZabbixApiError(
                "monitors.zabbix.api needs a token (token or token_file), or a user and password"
            )
        try:
            api = ZabbixAPI(
                url=self.url,
                validate_certs=settings.verify_tls,
                timeout=int(max(1, settings.timeout)),
            )
            if token is not None:
                api.login(token=token)
            else:
                api.login(user=settings.user, password=password)
            try:
                found = api.host.get(filter={"host": [host]}, output=["hostid", "host"])
                if not found:
                    raise UnknownZabbixHost(host)
                problems: list[dict[str, Any]] = api.problem.get(
                    hostids=[h["hostid"] for h in found],
                    output="extend",
                    selectTags="extend",
                    recent=False,
                    sortfield=["eventid"],
                    sortorder="DESC",
                    limit=settings.max_problems,
                )
            finally:
                api.logout()
        except ModuleBaseException as exc:
            # zabbix-utils hides the session and password of the request it quotes; a
            # URL written with a password in it is redacted here.
            raise ZabbixApiError(f"{redact(self.url)}: {redact(str(exc))}") from None
        except OSError as exc:  # a timeout or a reset the client lets through
            raise ZabbixApiError(f"{redact(self.url)}: {type(exc).__name__}: {exc}") from None
        return problems
