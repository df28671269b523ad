"""Signed callbacks: a consumer can tell that a callback came from opendoctor, and is
fresh, by an HMAC-SHA256 over the moment it was sent and the exact body.

    X-OpenDoctor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>

The key is the alarm's project's (`notifier.signing_keys`), known to the project's
consumers. `verify` is what a consumer runs (the sample consumer does).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-OpenDoctor-Signature"
TOLERANCE = 300  # seconds a signature is taken after it was made (clocks differ a little)


def _mac(key: bytes, at: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % at + body, hashlib.sha256).hexdigest()


def sign(key: bytes, body: bytes, at: int) -> str:
    """The header's value for `body` sent at `at` (unix seconds)."""
    return f"t={at},v1={_mac(key, at, body)}"


def verify(key: bytes, body: bytes, header: str | None, now: float) -> str | None:
    """Why the signature does not hold (None: it does)."""
    if not header:
        return f"no {SIGNATURE_HEADER} header"
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isdigit() or not given:
        return f"{SIGNATURE_HEADER} is not t=<seconds>,v1=<hex>"
    at = int(stamp)
    if abs(now - at) > TOLERANCE:
        return f"signed {int(now - at)} s ago: too old (or from the future)"
    if not hmac.compare_digest(_mac(key, at, body), given):
        return "the signature does not match the body"
    return None
