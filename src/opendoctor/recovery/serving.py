"""Whether a recovered server serves again: its application answers 200 (any 2xx).

Shared by the recoveries: a server counts as recovered only once its clients could use
it, not when the VIM says it runs (a VM may run and its application not be up yet).
"""

from __future__ import annotations

import asyncio
import time

from opendoctor.infra.httpclient import HttpClient, HttpError

POLL = 0.02  # seconds between asks: a VM that comes back is seen within a few tens of ms
ASK_TIMEOUT = 1.0  # one ask; an application that takes longer does not serve


async def wait_serving(http: HttpClient, endpoint: str, timeout: float) -> None:
    """Poll `endpoint` until it answers 2xx; `TimeoutError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = await http.get(endpoint, timeout=min(ASK_TIMEOUT, timeout))
            if resp.ok:
                return
        except HttpError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{endpoint} did not serve within {timeout:g}s")
        await asyncio.sleep(POLL)
