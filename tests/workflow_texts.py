"""Workflow definitions the workflow API tests share (python-mistralclient's and the
routes' own), so that both speak of the same workflows."""

from __future__ import annotations

GREET = """\
version: '2.0'
greet:
  description: Say hello, then nothing.
  input:
    - who
    - greeting: hello
  tasks:
    say:
      action: std.echo output=<% $.greeting + ', ' + $.who %>
      publish:
        said: <% task().result %>
      on-success: [rest]
    rest:
      action: std.noop
  output:
    said: <% $.said %>
"""

# Waits on a timer, so that it is still running while a test pauses, resumes or cancels it.
SLOW = """\
version: '2.0'
slow:
  tasks:
    nap:
      action: std.sleep seconds=30
"""

# Two levels of sub-workflows: family calls parent twice, one after the other, and parent
# calls child.
NESTED = """\
version: '2.0'
family:
  tasks:
    first:
      workflow: parent x=1
      on-success: [second]
    second:
      workflow: parent x=2
parent:
  input: [x]
  tasks:
    call_child:
      workflow: child value=<% $.x %>
child:
  input: [value]
  tasks:
    nothing:
      action: std.noop
"""
