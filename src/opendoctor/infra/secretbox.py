"""Secrets kept at rest (a BMC's password in the database), sealed with a key that is
not in the database: whoever reads a dump or a backup reads no password.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`); the key is a file readable
by its owner alone, made on first use. Every process of a scaled-out service must be
given the same file (`recovery.fencing.key_file`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBoxError(Exception):
    """The key cannot be used, or a sealed secret was sealed with another key."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SecretBoxError(f"not a key: {exc}") from None

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The key in `path`; a new one written there (mode 600) if there is none."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process made it first
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key() + b"\n")
        mode = path.stat().st_mode
        if mode & 0o077:
            raise SecretBoxError(
                f"key file {path} is open to group or others "
                f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"
            )
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretBoxError(
                "a stored secret was sealed with another key (is every process given the "
                "same recovery.fencing.key_file?)"
            ) from None
