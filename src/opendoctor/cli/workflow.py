"""`opendoctor workflow ...`: recovery workflows (Mistral's v2 language) on a running
service, through its Mistral-compatible API (`/v2/workflows`, `/v2/executions`, ...).

The group and the order of its commands. The commands are in `workflow_definitions`
(check a file; add, replace, list, show, delete definitions) and `workflow_executions`
(start and follow executions; their tasks and action calls); what both use is in
`workflow_shared`.
"""

from __future__ import annotations

import typer

from opendoctor.cli import workflow_definitions as definitions
from opendoctor.cli import workflow_executions as executions

app = typer.Typer(
    help="Recovery workflows: Mistral v2 workflow files, their executions and tasks.\n\n"
    "Check a file here, add it to a running service, start it and follow it to the end, "
    "look at what each task did. The same API serves python-mistralclient and the "
    "`mistral` command (point them at <api>/v2).",
    short_help="Workflows: check, add, run, follow executions and tasks.",
    no_args_is_help=True,
)

app.command()(definitions.validate)
app.command()(definitions.add)
app.command()(definitions.update)
app.command("list")(definitions.list_workflows)
app.command()(definitions.show)
app.command()(definitions.delete)
app.command()(executions.run)
app.command()(executions.executions)
app.command()(executions.execution)
app.command("pause")(executions.pause)
app.command("resume")(executions.resume)
app.command("cancel")(executions.cancel)
app.command()(executions.tasks)
app.command()(executions.actions)
