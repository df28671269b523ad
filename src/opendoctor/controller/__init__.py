"""The controller block: `VimDriver` implementations (`memory`, `lab`), and `make_vim`,
which picks one from the settings. The protocol itself is in `opendoctor.core.ports`."""
