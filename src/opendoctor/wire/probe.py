"""Wire format of the host heartbeat (UDP), shared by the prober and the lab's hosts.

Probe:  b"ODHB1 <seq>"            (seq: a decimal integer)
Answer: b"ODHB1 <seq> <hostname>"
"""

from __future__ import annotations

MAGIC = b"ODHB1"


def encode_probe(seq: int) -> bytes:
    return b"%s %d" % (MAGIC, seq)


def decode_probe(data: bytes) -> int | None:
    parts = data.split()
    if len(parts) != 2 or parts[0] != MAGIC or not parts[1].isdigit():
        return None
    return int(parts[1])


def encode_answer(seq: int, hostname: str) -> bytes:
    return b"%s %d %s" % (MAGIC, seq, hostname.encode())


def decode_answer(data: bytes) -> tuple[int, str] | None:
    parts = data.split()
    if len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2].decode(errors="replace")
