"""Process helpers shared by the lab's manager, hosts and runner (standard library only)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the pre-exec hook must not load libraries in the child.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> Callable[[], None]:
    """A pre-exec hook that makes the child get SIGKILL when the forking parent dies.

    This is how a power loss of a lab host also takes its VMs down, and how a
    crashed manager does not leave hosts behind.
    """
    parent = os.getpid()

    def hook() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would tell us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
