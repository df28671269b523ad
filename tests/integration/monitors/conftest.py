"""The monitors' tests: a lab, the service and the owners' consumers, with a real
Alertmanager and a real collectd sending to it and a RabbitMQ queue it consumes
(`opendoctor.tools.monitor_stack`), shared by the tests of a module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from opendoctor.tools.monitor_stack import MonitorStack, monitor_stack
from opendoctor.tools.monitor_tools import ToolMissing, alertmanager_binary, collectd_binary
from tests.integration.amqp.conftest import amqp_url as amqp_url  # a fixture here too
from tests.servers import need

# The lab's addresses: 127.141.x.y (each test module that starts a lab has its own).
IP_PREFIX = "127.141"


@pytest.fixture(scope="session")
def tools() -> None:
    """Alertmanager and collectd, as Debian packages them."""
    try:
        alertmanager_binary()
        collectd_binary()
    except ToolMissing as exc:
        need(str(exc))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tools: None, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MonitorStack]:
    workdir = tmp_path_factory.mktemp("monitors")
    async with monitor_stack(workdir, IP_PREFIX, amqp_url) as ms:
        yield ms
