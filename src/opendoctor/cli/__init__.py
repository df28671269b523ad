"""The `opendoctor` command: typer commands, one module per command group (`main` holds
the top level and the small commands; `graph`: topology, alarms, rca; `templates`,
`bench`, `cluster`; the lab's group is `opendoctor.lab.cli`)."""

from opendoctor.cli.main import app, main

__all__ = ["app", "main"]
