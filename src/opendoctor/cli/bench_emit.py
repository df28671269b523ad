"""How a benchmark command prints its figures: JSON for scripts, tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console


def emit(result: Any, as_json: bool, table: Callable[[Console, Any], None]) -> None:
    """Benchmark figures as JSON for scripts, or as a table for people."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        # Wide enough for every column even when piped to a file.
        table(Console(width=max(Console().width, 160)), result)
