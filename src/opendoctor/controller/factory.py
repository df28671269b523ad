"""Which `VimDriver` a process talks to, from its settings."""

from __future__ import annotations

from opendoctor.controller.lab import LabDriver
from opendoctor.core.ports import VimDriver
from opendoctor.core.settings import Settings


def make_vim(settings: Settings) -> VimDriver:
    """The lab at `vim.lab_url`, or else the lab running from the state directory
    (`VimError` if none is)."""
    url = settings.vim.lab_url
    if url is None:
        return LabDriver.from_state_dir(settings.lab_dir)
    return LabDriver(url)
