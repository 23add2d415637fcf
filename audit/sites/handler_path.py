"""handlers.py: the handler-path data file (audit/data/handler-path.txt) for FBT207, read once."""

from __future__ import annotations

from functools import cache

from fbt_audit import data_bytes


@cache
def handler_path() -> dict[str, str]:
    """function -> why it is on the int3/#DB/NMI/die-notifier path."""
    text = data_bytes("fbt_audit", "data", "handler-path.txt").decode("utf-8")
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        out[name] = reason.strip()
    return out
