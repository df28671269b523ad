"""Files of secrets: one `name secret` line each, `#` comments, readable by their
owner alone (a file that group or others can read is refused, as ssh refuses a key)."""

from __future__ import annotations

import stat
from pathlib import Path


class SecretFileError(ValueError):
    """The file cannot be used (unreadable, open to others, malformed)."""


def read_secret_file(path: Path, what: str) -> dict[str, str]:
    """`what` names the file in errors ("monitor tokens file", say)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise SecretFileError(f"{what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise SecretFileError(
            f"{what} {path} is open to group or others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    secrets: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SecretFileError(f"{path} line {number}: expected `name secret`")
        secrets[parts[0]] = parts[1]
    return secrets
