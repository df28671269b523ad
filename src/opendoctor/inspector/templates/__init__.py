"""Rule templates: declarative correlation rules evaluated over the entity graph.

`compiler.compile_template` turns YAML into a checked `Template`; `engine.Engine` keeps
every template's matches current as the graph changes and says what to do about them.
"""

from opendoctor.inspector.templates.compiler import compile_template
from opendoctor.inspector.templates.deductions import Plan
from opendoctor.inspector.templates.engine import Engine
from opendoctor.inspector.templates.model import Template, TemplateError

__all__ = ["Engine", "Plan", "Template", "TemplateError", "compile_template"]
