"""The controller block: everything opendoctor asks of a VIM goes through a `VimDriver`."""

from opendoctor.controller.base import VimDriver, VimError

__all__ = ["VimDriver", "VimError"]
