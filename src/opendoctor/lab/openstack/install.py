"""The bed's own virtualenv, made from `requirements.txt` beside this file (one OpenStack
release, every package pinned) and reused while that file is unchanged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from opendoctor.lab.openstack.spec import BedSpec

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
STAMP = ".opendoctor-installed"


class InstallError(RuntimeError):
    pass


def wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def installed(spec: BedSpec) -> bool:
    """Whether the venv holds exactly what `requirements.txt` pins."""
    try:
        return (spec.venv / STAMP).read_text().strip() == wanted()
    except OSError:
        return False


def ensure_venv(spec: BedSpec, log: Path) -> bool:
    """Make or refresh the venv (about a minute from the package index); True if it did."""
    if installed(spec):
        return False
    python = os.environ.get("OPENDOCTOR_OPENSTACK_PYTHON") or _base_python()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        steps = [
            [python, "-m", "venv", "--clear", str(spec.venv)],
            # Everything is pinned: pip resolves nothing, it fetches and unpacks. The
            # machine's pip configuration (indexes, a constraints file) still applies.
            [spec.bin("python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        ]
        for argv in steps:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise InstallError(f"{' '.join(argv[:4])} ... failed; see {log}")
    (spec.venv / STAMP).write_text(wanted() + "\n")
    return True


def _base_python() -> str:
    """The interpreter under ours (a venv's python makes venvs of its base anyway)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else sys.executable
