"""`lab.json`: how clients find a running lab (its URL, the manager's pid, the spec)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "lab.json"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The contents of `lab.json`, or None when there is none or it makes no sense."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    return data


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    # Readers poll for this file; they must never see it half-written.
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    # Only its owner reads it: it says where the lab's API is, which takes any command.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def remove_state(state_dir: Path, pid: int | None = None) -> None:
    """Remove `lab.json`; with `pid`, only if it is that manager's."""
    if pid is not None:
        data = read_state(state_dir)
        if data is None or data.get("pid") != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
