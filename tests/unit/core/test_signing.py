"""Callback signatures: what the notifier sends and what a consumer checks."""

from __future__ import annotations

from opendoctor.core.signing import TOLERANCE, sign, verify

KEY, BODY, AT = b"project-a-key", b'{"alarm_id": "x"}', 1_800_000_000


def test_a_signature_holds_for_its_body_key_and_time() -> None:
    header = sign(KEY, BODY, AT)
    assert verify(KEY, BODY, header, AT + 1) is None


def test_anything_changed_breaks_it() -> None:
    header = sign(KEY, BODY, AT)
    assert verify(b"other-key", BODY, header, AT) is not None
    assert verify(KEY, BODY + b" ", header, AT) is not None
    stamp, mac = header.split(",")
    assert verify(KEY, BODY, f"t={AT + 1},{mac}", AT) is not None  # time moved
    assert "too old" in (verify(KEY, BODY, header, AT + TOLERANCE + 1) or "")
    for bad in (None, "", "v1=abc", "t=x,v1=abc", stamp):
        assert verify(KEY, BODY, bad, AT) is not None
