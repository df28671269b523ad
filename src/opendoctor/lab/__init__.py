"""The lab: a small real cloud on one machine (hosts, VMs, a VIM API, fault injection).

Host and VM processes import this package too, and they must start fast with the
standard library only, so the public names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opendoctor.lab.client import LabClient, LabError, LabNotRunning
    from opendoctor.lab.runner import LabRunner, LabStartError
    from opendoctor.lab.spec import LabSpec

__all__ = ["LabClient", "LabError", "LabNotRunning", "LabRunner", "LabSpec", "LabStartError"]

_HOMES = {
    "LabClient": "opendoctor.lab.client",
    "LabError": "opendoctor.lab.client",
    "LabNotRunning": "opendoctor.lab.client",
    "LabRunner": "opendoctor.lab.runner",
    "LabStartError": "opendoctor.lab.runner",
    "LabSpec": "opendoctor.lab.spec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
