"""deps.py: the one place verify imports the rest of fbt_audit (the stages before it).

The errors are imported at once (the command line registers `fbt-audit verify` at every start); the audit,
the reports and bisect only when a verify module first asks for them (PEP 562 module __getattr__): they would
cost every `fbt-audit vmlinux` their import time.
"""

from __future__ import annotations

from importlib import import_module

from fbt_audit.model.errors import InputError, UsageError

_LAZY = {
    "bisect": ("fbt_audit.investigate.bisect", None),
    "Level": ("fbt_audit.model.core", "Level"),
    "audit": ("fbt_audit.pipeline.api", "audit"),
    "render": ("fbt_audit.report.formats", "render"),
    "render_list": ("fbt_audit.report.listing", "render_list"),
    "NAMED_TABLES": ("fbt_audit.table.emulation", "NAMED"),
}

__all__ = ["NAMED_TABLES", "InputError", "Level", "UsageError", "audit", "bisect", "render", "render_list"]  # noqa: F822


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = import_module(where[0])
    value = mod if where[1] is None else getattr(mod, where[1])
    globals()[name] = value
    return value
