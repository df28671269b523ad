"""The workflow store: definitions (`workflow_defs`), runs (`workflow_runs`) and states
asked of them (`workflow_requests`) behind one object, as the engine and the API use them."""

from __future__ import annotations

from opendoctor.store.db import Database
from opendoctor.store.paging import UnknownMarker
from opendoctor.store.workflow_defs import DefinitionExists, DefinitionStore
from opendoctor.store.workflow_requests import RequestStore
from opendoctor.store.workflow_runs import UNFINISHED, Run, RunStore, RunWrites

__all__ = [
    "UNFINISHED",
    "DefinitionExists",
    "Run",
    "RunWrites",
    "UnknownMarker",
    "WorkflowStore",
]


class WorkflowStore(DefinitionStore, RunStore, RequestStore):
    """Workflow definitions, executions, task executions and action executions."""

    def __init__(self, db: Database) -> None:
        DefinitionStore.__init__(self, db)
        RunStore.__init__(self, db)
        RequestStore.__init__(self, db)
