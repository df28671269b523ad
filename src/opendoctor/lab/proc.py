"""Process helpers shared by the lab's manager, hosts and runner (standard library only;
`die_with_parent` is in `opendoctor.infra.procs`, shared with every stack)."""

from __future__ import annotations

import os
import signal


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
