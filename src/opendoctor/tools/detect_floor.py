"""`bench detect`'s floor: the bare UDP echo of `detect_echo.py`, killed and timed.

A responder process and a prober process on loopback, at the setting's interval and
misses. Each run SIGKILLs the responder (T00 just before), reads when the prober said
"down", and starts a new responder until the prober says "up" again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from opendoctor.tools import detect_echo

SCRIPT = Path(detect_echo.__file__)
WAIT = 10.0  # seconds for the prober to see a change


class FloorError(RuntimeError):
    pass


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    # -I: isolated, by path: not a line of opendoctor is loaded into these processes.
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(SCRIPT), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _line(proc: asyncio.subprocess.Process, key: str) -> dict[str, Any]:
    """The next line of `proc` that has `key`."""
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        while line := await proc.stdout.readline():
            data: dict[str, Any] = json.loads(line)
            if key in data:
                return data
    raise FloorError(f"the bare prober ended before saying {key!r}")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def floor(interval: float, misses: int, runs: int, address: str, port: int) -> dict[str, Any]:
    """Fault → detected (seconds) per run, answer times, the prober's CPU seconds."""
    responder = await _spawn("responder", address, str(port))
    prober = await _spawn("prober", address, str(port), str(interval), str(misses))
    detected: list[float] = []
    try:
        await _line(prober, "up")
        for _ in range(runs):
            # Answers flowing for a while, as on the service's side before a kill.
            await asyncio.sleep(misses * interval * 4)
            t00 = time.time()
            responder.kill()
            await responder.wait()
            detected.append(float((await _line(prober, "down"))["down"]) - t00)
            responder = await _spawn("responder", address, str(port))
            await _line(prober, "up")
        prober.terminate()
        last = await _line(prober, "rtt")
    finally:
        await _stop(responder)
        await _stop(prober)
    return {"detected": detected, "rtt": last["rtt"], "cpu": last["cpu"], "wall": last["wall"]}
