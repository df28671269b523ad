"""Which `VimDriver` a process talks to, from its settings."""

from __future__ import annotations

from opendoctor.controller.lab import LabDriver
from opendoctor.core.ports import VimDriver, VimError
from opendoctor.core.settings import Settings


def make_vim(settings: Settings) -> VimDriver:
    """Nova (`vim.driver = "openstack"`), the lab at `vim.lab_url`, or else the lab
    running from the state directory; `VimError` naming the settings if there is none."""
    if settings.vim.driver == "openstack":
        from opendoctor.controller.openstack import OpenStackDriver

        return OpenStackDriver.from_settings(settings.vim.openstack)
    url = settings.vim.lab_url
    if url is not None:
        return LabDriver(url)
    try:
        return LabDriver.from_state_dir(settings.lab_dir)
    except VimError as exc:
        raise VimError(
            f"no VIM to talk to: {exc}. Start one with `opendoctor lab up`, give its URL "
            '(vim.lab_url, OPENDOCTOR_VIM__LAB_URL), or use Nova: vim.driver = "openstack" '
            "(OPENDOCTOR_VIM__DRIVER=openstack) with clouds.yaml or the OS_* variables "
            "(docs/openstack.md)",
            exc.status,
        ) from exc
