"""Errors that mean "this request cannot be done", raised anywhere, answered by the API."""

from __future__ import annotations


class RequestError(Exception):
    """A caller's request is wrong or not allowed.

    `status` is the HTTP status the API answers with; `field` names what is wrong
    (`event_rule.query[0].op`, `X-Project-Id`, …) so the answer can say so.
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
