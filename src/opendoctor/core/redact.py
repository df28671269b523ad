"""Secrets out of what people read: logs, error texts, API answers.

An alarm action may carry its consumer's credentials (`https://user:pass@host/`,
`amqp://user:pass@broker/`, `?token=...`); they are the tenant's, and must not reach
an operator's log or another caller's answer.
"""

from __future__ import annotations

import re

HIDDEN = "***"

# scheme://user:password@ -> scheme://user:***@
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]*@")
# ?token=...&password=... (and the like) -> ?token=***
_QUERY = re.compile(
    r"(?P<head>[?&](?:[a-z0-9_.-]*(?:pass(?:word|wd)?|token|secret|signature|api[_-]?key|"
    r"access[_-]?key|auth)[a-z0-9_.-]*)=)[^&#\s\"']*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the passwords of URLs and the values of secret-looking query
    parameters replaced by `***`."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{HIDDEN}", text)
