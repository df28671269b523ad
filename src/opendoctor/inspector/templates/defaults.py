"""The templates opendoctor ships with, and loading templates from files."""

from __future__ import annotations

from importlib import resources

from opendoctor.inspector.templates.compiler import compile_template
from opendoctor.inspector.templates.model import Template


def default_texts() -> dict[str, str]:
    """File name → text of every built-in template."""
    folder = resources.files("opendoctor.inspector.templates").joinpath("defaults")
    return {
        entry.name: entry.read_text()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith((".yaml", ".yml"))
    }


def load_defaults() -> list[Template]:
    compiled: list[Template] = []
    for name, text in default_texts().items():
        compiled.append(compile_template(text, f"built-in {name}", compiled))
    return compiled
